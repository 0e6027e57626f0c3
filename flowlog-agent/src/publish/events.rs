//! Records to CloudWatch Logs events: one event per record (message = the record line,
//! timestamp = its `start` in ms), one stream per interface, cut into batches that PutLogEvents
//! accepts: chronological, at most 10,000 events and 1,048,576 bytes (each event's UTF-8
//! message plus 26 bytes), spanning less than 24 hours.

use std::collections::BTreeMap;

use crate::{inventory::metadata::Metadata, records::FlowRecord, records::format::LogFormat};

/// PutLogEvents: events per call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// PutLogEvents: bytes per call, counted as the sum of message bytes plus
/// [`EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// PutLogEvents: the events of one call may not span 24 hours.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3_600 * 1_000;

/// One CloudWatch Logs event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    pub message: String,
}

impl LogEvent {
    /// What the event counts against [`MAX_BATCH_BYTES`].
    pub fn billed_bytes(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD_BYTES
    }
}

/// Events for one stream that fit one PutLogEvents call, in chronological order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEventBatch {
    pub stream: String,
    pub events: Vec<LogEvent>,
}

/// The stream of an interface, as AWS names them (`eni-0c19436730cc350ae-all`).
pub fn stream_name(interface_id: &str) -> String {
    format!("{interface_id}-all")
}

/// Renders records as events and groups them into PutLogEvents batches per stream.
pub struct LogEventPacker {
    format: LogFormat,
    meta: Metadata,
}

impl LogEventPacker {
    pub fn new(format: LogFormat, meta: Metadata) -> Self {
        LogEventPacker { format, meta }
    }

    /// One window's records as batches: streams in name order, each stream's events in
    /// chronological order (records with the same `start` keep their order).
    pub fn pack(&self, records: &[FlowRecord]) -> Vec<LogEventBatch> {
        let mut per_stream: BTreeMap<&str, Vec<LogEvent>> = BTreeMap::new();
        for rec in records {
            let event = LogEvent {
                timestamp_ms: (rec.start as i64).saturating_mul(1_000),
                message: self.format.render(rec, &self.meta),
            };
            per_stream
                .entry(rec.interface_id.as_str())
                .or_default()
                .push(event);
        }
        per_stream
            .into_iter()
            .flat_map(|(iface, events)| split(&stream_name(iface), events))
            .collect()
    }
}

/// Sorts `events` by timestamp (stably) and cuts them into batches within the PutLogEvents
/// limits. An event is never split or dropped: one that alone exceeds the byte limit (records
/// are a few hundred bytes at most, so this does not happen) still gets a batch of its own.
pub fn split(stream: &str, mut events: Vec<LogEvent>) -> Vec<LogEventBatch> {
    events.sort_by_key(|e| e.timestamp_ms);
    let mut batches = Vec::new();
    let mut current: Vec<LogEvent> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.billed_bytes();
        let full = current.len() == MAX_BATCH_EVENTS
            || bytes + size > MAX_BATCH_BYTES
            || current
                .first()
                .is_some_and(|f| event.timestamp_ms - f.timestamp_ms >= MAX_BATCH_SPAN_MS);
        if full && !current.is_empty() {
            batches.push(LogEventBatch {
                stream: stream.to_string(),
                events: std::mem::take(&mut current),
            });
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        batches.push(LogEventBatch {
            stream: stream.to_string(),
            events: current,
        });
    }
    batches
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        capture::{collect::Direction, reject::verdict::Action},
        records::{LogStatus, Traffic},
    };

    fn event(ts: i64, len: usize) -> LogEvent {
        LogEvent {
            timestamp_ms: ts,
            message: "x".repeat(len),
        }
    }

    fn check_limits(batches: &[LogEventBatch]) {
        for b in batches {
            assert!(!b.events.is_empty());
            assert!(
                b.events.len() <= MAX_BATCH_EVENTS,
                "{} events",
                b.events.len()
            );
            let bytes: usize = b.events.iter().map(LogEvent::billed_bytes).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes} bytes");
            assert!(
                b.events
                    .windows(2)
                    .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
            );
            let span = b.events.last().unwrap().timestamp_ms - b.events[0].timestamp_ms;
            assert!(span < MAX_BATCH_SPAN_MS, "{span} ms");
        }
    }

    #[test]
    fn splits_at_ten_thousand_events() {
        let events: Vec<LogEvent> = (0..25_001).map(|i| event(1_000 + i, 10)).collect();
        let batches = split("s", events.clone());
        check_limits(&batches);
        let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_001]);
        let joined: Vec<LogEvent> = batches.into_iter().flat_map(|b| b.events).collect();
        assert_eq!(joined, events, "every event exactly once, in order");
    }

    #[test]
    fn splits_at_one_mebibyte_counting_26_bytes_per_event() {
        // 1,048,576 / (998 + 26) = 1024 events exactly fill one batch.
        let events: Vec<LogEvent> = (0..2_049).map(|i| event(i, 998)).collect();
        let batches = split("s", events);
        check_limits(&batches);
        let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [1_024, 1_024, 1]);
        // One byte more per event and 1024 no longer fit.
        let batches = split("s", (0..1_024).map(|i| event(i, 999)).collect());
        let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [1_023, 1]);
    }

    #[test]
    fn splits_before_spanning_24_hours_and_sorts() {
        let day = MAX_BATCH_SPAN_MS;
        let events = vec![
            event(day, 1),
            event(0, 1),
            event(day - 1, 1),
            event(2 * day + 5, 1),
        ];
        let batches = split("s", events);
        check_limits(&batches);
        let ts: Vec<Vec<i64>> = batches
            .iter()
            .map(|b| b.events.iter().map(|e| e.timestamp_ms).collect())
            .collect();
        assert_eq!(ts, [vec![0, day - 1], vec![day], vec![2 * day + 5]]);
    }

    #[test]
    fn packs_one_stream_per_interface_with_start_as_timestamp() {
        let traffic = Traffic {
            direction: Direction::Egress,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            pkt_src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            pkt_dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            src_port: 5000,
            dst_port: 53,
            protocol: 17,
            packets: 3,
            bytes: 300,
            tcp_flags: 0,
            action: Action::Accept,
            reject_reason: None,
        };
        let rec = |iface: &str, start: u64, t: Option<Traffic>| FlowRecord {
            interface_id: iface.into(),
            log_status: if t.is_some() {
                LogStatus::Ok
            } else {
                LogStatus::NoData
            },
            start,
            end: start + 5,
            traffic: t,
        };
        let records = vec![
            rec("eth1", 1_700_000_010, Some(traffic.clone())),
            rec("eth0", 1_700_000_000, None),
            rec("eth1", 1_700_000_003, Some(traffic)),
        ];
        let meta = Metadata {
            account_id: "123456789012".into(),
            ..Metadata::default()
        };
        let batches = LogEventPacker::new(LogFormat::default(), meta).pack(&records);
        let got: Vec<(&str, Vec<(i64, &str)>)> = batches
            .iter()
            .map(|b| {
                (
                    b.stream.as_str(),
                    b.events
                        .iter()
                        .map(|e| (e.timestamp_ms, e.message.as_str()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "eth0-all",
                    vec![(
                        1_700_000_000_000,
                        "2 123456789012 eth0 - - - - - - - 1700000000 1700000005 - NODATA"
                    )]
                ),
                (
                    "eth1-all",
                    vec![
                        (
                            1_700_000_003_000,
                            "2 123456789012 eth1 10.0.0.1 10.0.0.2 5000 53 17 3 300 1700000003 1700000008 ACCEPT OK"
                        ),
                        (
                            1_700_000_010_000,
                            "2 123456789012 eth1 10.0.0.1 10.0.0.2 5000 53 17 3 300 1700000010 1700000015 ACCEPT OK"
                        ),
                    ]
                ),
            ]
        );
    }
}
