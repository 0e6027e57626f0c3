//! What reached moto: every object is read once (by key: a PutObject retried after a lost
//! acknowledgement writes the same key again and counts once, as S3 keeps one object per key),
//! its records counted, and the object deleted so moto's memory stays flat over a long run.

use std::{collections::HashSet, io::Read as _};

use flate2::read::MultiGzDecoder;
use flowlog_tests::{moto::Moto, records::DEFAULT_HEADER};

use crate::load::CHURN_PORTS;

#[derive(Debug, Default, Clone)]
pub struct Tally {
    seen: HashSet<String>,
    pub objects: u64,
    /// Objects whose key had been read before (a retried PutObject).
    pub repeated_keys: u64,
    pub records: u64,
    pub ok: u64,
    pub nodata: u64,
    pub skipdata: u64,
    /// Packets of the OK records of the watched interface.
    pub packets: u64,
    /// Records and packets of the churn flows (UDP to one of [`CHURN_PORTS`]).
    pub churn_records: u64,
    pub churn_packets: u64,
}

impl Tally {
    /// Reads, counts and deletes every object of `bucket` not read yet. `iface`: the
    /// interface whose packets are summed.
    pub fn poll(&mut self, moto: &Moto, bucket: &str, iface: &str) {
        let seen = self.seen.clone();
        let fetched: Vec<(String, Vec<u8>)> = moto.with_clients(async |c| {
            let mut out = Vec::new();
            let mut pages =
                c.s3.list_objects_v2()
                    .bucket(bucket)
                    .into_paginator()
                    .send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(String::from)),
                );
            }
            for key in keys {
                let got = c.s3.get_object().bucket(bucket).key(&key).send().await;
                let body = got
                    .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
                    .body
                    .collect()
                    .await
                    .expect("object body")
                    .into_bytes()
                    .to_vec();
                c.s3.delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
                if !seen.contains(&key) {
                    out.push((key, body));
                } else {
                    out.push((key, Vec::new()));
                }
            }
            out
        });
        for (key, body) in fetched {
            if !self.seen.insert(key.clone()) {
                self.repeated_keys += 1;
                continue;
            }
            self.objects += 1;
            self.count(&key, &body, iface);
        }
    }

    fn count(&mut self, key: &str, body: &[u8], iface: &str) {
        let mut text = String::new();
        MultiGzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("object {key} is not gzip text: {e}"));
        let mut lines = text.split_terminator('\n');
        assert_eq!(lines.next(), Some(DEFAULT_HEADER), "header of {key}");
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 14, "field count of {line:?} in {key}");
            self.records += 1;
            match f[13] {
                "OK" => self.ok += 1,
                "NODATA" => self.nodata += 1,
                "SKIPDATA" => self.skipdata += 1,
                other => panic!("log-status {other:?} in {line:?}"),
            }
            if f[13] != "OK" || f[2] != iface {
                continue;
            }
            let packets: u64 = f[8]
                .parse()
                .unwrap_or_else(|_| panic!("packets in {line:?}"));
            self.packets += packets;
            let dport: u16 = f[6].parse().unwrap_or(0);
            if f[7] == "17" && CHURN_PORTS.contains(&dport) {
                self.churn_records += 1;
                self.churn_packets += packets;
            }
        }
    }
}
