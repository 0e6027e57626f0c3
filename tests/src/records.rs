//! Reading back what the agent wrote: every `*.log.gz` under its output directory, header
//! checked, each line split into fields by the header's names.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;

/// AWS's default (version 2) header line.
pub const DEFAULT_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport \
                                  protocol packets bytes start end action log-status";

/// The packet part of an `OK` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// One record line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub version: u8,
    /// Empty when the format has no such field.
    pub account_id: String,
    pub interface_id: String,
    /// `None` for NODATA/SKIPDATA (all seven fields `-`).
    pub tuple: Option<Tuple>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub start: u64,
    pub end: u64,
    /// Empty when the format has no such field.
    pub action: String,
    pub log_status: String,
    /// Every field by header name, as written (also the v2 ones).
    pub fields: BTreeMap<String, String>,
    /// The line as written, for messages.
    pub line: String,
}

impl Record {
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no field {name} in {:?}", self.line))
    }
}

/// Every `*.log.gz` file under `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().ends_with(".log.gz") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Reads every record under `dir`; every file must start with the default header.
pub fn read_default(dir: &Path) -> Vec<Record> {
    read(dir, DEFAULT_HEADER)
}

/// Reads every record under `dir`; every file must start with `header`.
pub fn read(dir: &Path, header: &str) -> Vec<Record> {
    let names: Vec<&str> = header.split(' ').collect();
    let mut out = Vec::new();
    for path in files(dir) {
        let raw = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut text = String::new();
        MultiGzDecoder::new(raw.as_slice())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{} is not gzip text: {e}", path.display()));
        let mut lines = text.split_terminator('\n');
        assert_eq!(lines.next(), Some(header), "header of {}", path.display());
        for line in lines {
            out.push(parse_line(line, &names));
        }
    }
    out
}

fn num<T: std::str::FromStr>(line: &str, name: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| panic!("field {name} = {v:?} is not a number in {line:?}"))
}

/// Parses one line: single spaces only, exactly one value per header name.
pub fn parse_line(line: &str, names: &[&str]) -> Record {
    let values: Vec<&str> = line.split(' ').collect();
    assert_eq!(values.len(), names.len(), "field count of {line:?}");
    assert!(
        values.iter().all(|v| !v.is_empty()),
        "empty field (double space?) in {line:?}"
    );
    let fields: BTreeMap<String, String> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let get = |n: &str| {
        fields
            .get(n)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("format lacks {n}"))
    };
    let status = get("log-status").to_string();
    let packet_fields = [
        "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes",
    ];
    let (tuple, packets, bytes) = if status == "OK" {
        let tuple = Tuple {
            src: num(line, "srcaddr", get("srcaddr")),
            dst: num(line, "dstaddr", get("dstaddr")),
            src_port: num(line, "srcport", get("srcport")),
            dst_port: num(line, "dstport", get("dstport")),
            protocol: num(line, "protocol", get("protocol")),
        };
        (
            Some(tuple),
            Some(num(line, "packets", get("packets"))),
            Some(num(line, "bytes", get("bytes"))),
        )
    } else {
        assert!(
            status == "NODATA" || status == "SKIPDATA",
            "unknown log-status in {line:?}"
        );
        for f in packet_fields {
            assert_eq!(get(f), "-", "{f} of a {status} record: {line:?}");
        }
        if let Some(action) = fields.get("action") {
            assert_eq!(action, "-", "action of a {status} record: {line:?}");
        }
        (None, None, None)
    };
    let start: u64 = num(line, "start", get("start"));
    let end: u64 = num(line, "end", get("end"));
    assert!(start <= end, "start after end in {line:?}");
    Record {
        version: num(line, "version", get("version")),
        account_id: fields.get("account-id").cloned().unwrap_or_default(),
        interface_id: get("interface-id").to_string(),
        tuple,
        packets,
        bytes,
        start,
        end,
        action: fields.get("action").cloned().unwrap_or_default(),
        log_status: status,
        fields,
        line: line.to_string(),
    }
}

/// Sum of one tuple's records over all windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    /// How many records (windows) the tuple appeared in.
    pub records: usize,
}

/// Packets and bytes per tuple, summed over windows (a flow may straddle a boundary).
pub fn totals(records: &[Record]) -> BTreeMap<Tuple, Totals> {
    let mut out: BTreeMap<Tuple, Totals> = BTreeMap::new();
    for r in records {
        if let (Some(t), Some(p), Some(b)) = (r.tuple, r.packets, r.bytes) {
            let e = out.entry(t).or_default();
            e.packets += p;
            e.bytes += b;
            e.records += 1;
        }
    }
    out
}

/// The records' lines, one per line: for failure messages.
pub fn dump(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| r.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads `dir` (default header) until `done` holds for the records, for at most `timeout`.
/// Panics with what was read if it never does.
pub fn wait_for(
    dir: &Path,
    timeout: std::time::Duration,
    what: &str,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    wait_for_with_header(dir, DEFAULT_HEADER, timeout, what, done)
}

/// [`wait_for`] for records written with `header`.
pub fn wait_for_with_header(
    dir: &Path,
    header: &str,
    timeout: std::time::Duration,
    what: &str,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let records = read(dir, header);
        if done(&records) {
            return records;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "no {what} within {timeout:?}; records so far:\n{}",
                dump(&records)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
