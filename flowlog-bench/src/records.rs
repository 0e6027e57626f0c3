//! The records a benchmarked agent wrote with a `file:` destination: gzip text objects under
//! a directory, one header line each.

use std::fs;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context;

/// Every record line of every object under `dir` (subdirectories included), headers left out.
pub fn lines(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "gz") {
                let mut text = String::new();
                flate2::read::GzDecoder::new(
                    fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
                )
                .read_to_string(&mut text)
                .with_context(|| format!("gunzip {}", path.display()))?;
                out.extend(text.lines().skip(1).map(str::to_owned));
            }
        }
    }
    Ok(out)
}

/// One record of the default (version 2) format: `version account-id interface-id srcaddr
/// dstaddr srcport dstport protocol packets bytes start end action log-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2<'a> {
    /// srcaddr, dstaddr, srcport, dstport, protocol as written (`-` for NODATA/SKIPDATA).
    pub tuple: [&'a str; 5],
    pub packets: Option<u64>,
    pub log_status: &'a str,
}

impl<'a> V2<'a> {
    /// None for a line that does not have the 14 fields of the default format.
    pub fn parse(line: &'a str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [
            _,
            _,
            _,
            src,
            dst,
            sport,
            dport,
            proto,
            packets,
            _,
            _,
            _,
            _,
            status,
        ] = f[..]
        else {
            return None;
        };
        Some(V2 {
            tuple: [src, dst, sport, dport, proto],
            packets: packets.parse().ok(),
            log_status: status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_and_skipdata_records() {
        let ok = V2::parse("2 123 eni-1 10.0.0.1 10.0.0.2 4000 9 17 3 192 10 70 ACCEPT OK")
            .expect("an OK record");
        assert_eq!(ok.tuple, ["10.0.0.1", "10.0.0.2", "4000", "9", "17"]);
        assert_eq!((ok.packets, ok.log_status), (Some(3), "OK"));
        let skip =
            V2::parse("2 123 eni-1 - - - - - - - 10 70 - SKIPDATA").expect("a SKIPDATA record");
        assert_eq!((skip.packets, skip.log_status), (None, "SKIPDATA"));
        assert_eq!(V2::parse("version account-id"), None);
    }
}
