//! Objects as consumers read them: the four S3 key layouts of AWS's DestinationOptions, the gzip
//! text file read the way AWS's published Athena table reads it, and Parquet files read back with
//! a Parquet reader (column names, types, compression, values, nulls).

mod support;

use std::io::Read;

use flate2::read::GzDecoder;
use flowlog_agent::{
    inventory::metadata::Metadata,
    publish::batch::{Batcher, FinishedObject},
    publish::layout::{FileFormat, ObjectLayout},
    records::FlowRecord,
    records::format::LogFormat,
};
use parquet::{
    basic::{Compression, ConvertedType, LogicalType, Repetition, Type as PhysicalType},
    file::reader::{FileReader, SerializedFileReader},
    record::Field as PqField,
};
use support::{Flow, build, drained, fixture, format_string, iface, metadata};

/// 2018-06-20T16:20:00Z and a record ending in that 5-minute slot.
const SLOT: u64 = 1_529_511_600;

fn layout(hive: bool, hourly: bool) -> ObjectLayout {
    ObjectLayout {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        flow_log_id: "fl-1234abcd".into(),
        hive_compatible_partitions: hive,
        per_hour_partition: hourly,
    }
}

#[test]
fn the_four_key_layouts() {
    let cases = [
        (
            false,
            false,
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz",
        ),
        (
            false,
            true,
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/16/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz",
        ),
        (
            true,
            false,
            "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2018/month=06/day=20/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz",
        ),
        (
            true,
            true,
            "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2018/month=06/day=20/hour=16/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz",
        ),
    ];
    for (hive, hourly, want) in cases {
        assert_eq!(
            layout(hive, hourly).key(SLOT, 0xfe123456, "log.gz"),
            want,
            "hive={hive} hourly={hourly}"
        );
    }
}

fn sample_records() -> (Metadata, Vec<FlowRecord>) {
    let ranges = fixture("ip-ranges.json");
    let meta = metadata(&[
        "--account-id",
        "123456789012",
        "--region",
        "us-east-1",
        "--vpc-id",
        "vpc-01",
        "--subnet-id",
        "subnet-01",
        "--instance-id",
        "i-01",
        "--az-id",
        "use1-az1",
        "--vpc-cidr",
        "10.0.0.0/16",
        "--traffic-path",
        "0.0.0.0/0=8",
        "--aws-ip-ranges",
        ranges.to_str().unwrap(),
    ]);
    let base = Flow {
        ifindex: 2,
        egress: false,
        src: "",
        dst: "",
        sport: 0,
        dport: 0,
        protocol: 6,
        packets: 0,
        bytes: 0,
        start: SLOT + 10,
        end: SLOT + 70,
        tcp_flags: 0,
    };
    let flows = [
        Flow {
            src: "52.95.128.179",
            dst: "10.0.0.71",
            sport: 80,
            dport: 34210,
            packets: 14,
            bytes: 15044,
            tcp_flags: 19,
            ..base
        },
        Flow {
            egress: true,
            src: "10.0.0.71",
            dst: "52.95.128.179",
            sport: 34210,
            dport: 80,
            packets: 7,
            bytes: 471,
            tcp_flags: 3,
            ..base
        },
        Flow {
            egress: true,
            src: "10.0.0.71",
            dst: "10.0.3.3",
            protocol: 1,
            packets: 4,
            bytes: 336,
            ..base
        },
    ];
    let watched = [
        (2, iface("eni-1235b8ca123456789", Some("10.0.0.71"), None)),
        (3, iface("eni-idle", Some("10.0.0.72"), None)),
    ];
    let recs = build(&drained((SLOT, SLOT + 120), &flows, &[]), &watched);
    assert_eq!(recs.len(), 4, "three flows and one NODATA");
    (meta, recs)
}

fn one_object(
    format: &LogFormat,
    meta: &Metadata,
    recs: &[FlowRecord],
    ff: FileFormat,
    hive: bool,
) -> FinishedObject {
    let mut b = Batcher::new(layout(hive, false), format.clone(), meta.clone(), 300)
        .with_file_format(ff)
        .unwrap();
    assert!(b.add(recs, SLOT).is_empty());
    let mut objs = b.close_all();
    assert_eq!(objs.len(), 1);
    objs.remove(0)
}

/// AWS's published Athena DDL (v2-v5 columns, text, LazySimpleSerDe splitting on one space,
/// one header line skipped), with each column's Athena type.
const ATHENA_COLUMNS: &[(&str, &str)] = &[
    ("version", "int"),
    ("account_id", "string"),
    ("interface_id", "string"),
    ("srcaddr", "string"),
    ("dstaddr", "string"),
    ("srcport", "int"),
    ("dstport", "int"),
    ("protocol", "bigint"),
    ("packets", "bigint"),
    ("bytes", "bigint"),
    ("start", "bigint"),
    ("end", "bigint"),
    ("action", "string"),
    ("log_status", "string"),
    ("vpc_id", "string"),
    ("subnet_id", "string"),
    ("instance_id", "string"),
    ("tcp_flags", "int"),
    ("type", "string"),
    ("pkt_srcaddr", "string"),
    ("pkt_dstaddr", "string"),
    ("region", "string"),
    ("az_id", "string"),
    ("sublocation_type", "string"),
    ("sublocation_id", "string"),
    ("pkt_src_aws_service", "string"),
    ("pkt_dst_aws_service", "string"),
    ("flow_direction", "string"),
    ("traffic_path", "int"),
];

#[test]
fn gzip_text_reads_like_athenas_table_definition() {
    let (meta, recs) = sample_records();
    let format: LogFormat = ATHENA_COLUMNS
        .iter()
        .map(|(c, _)| format!("${{{}}}", c.replace('_', "-")))
        .collect::<Vec<_>>()
        .join(" ")
        .parse()
        .unwrap();
    let obj = one_object(&format, &meta, &recs, FileFormat::PlainText, true);
    assert!(obj.key.ends_with(".log.gz") && obj.key.starts_with("AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2018/month=06/day=20/"), "{}", obj.key);
    let mut text = String::new();
    GzDecoder::new(&obj.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.ends_with('\n'));
    let mut lines = text.lines();
    // skip.header.line.count=1: the header is the fields' names, as in the format.
    let header: Vec<String> = ATHENA_COLUMNS
        .iter()
        .map(|(c, _)| c.replace('_', "-"))
        .collect();
    assert_eq!(lines.next().unwrap(), header.join(" "));
    let rows: Vec<Vec<Option<String>>> = lines
        .map(|line| {
            // FIELDS TERMINATED BY ' ': one space between values, no empty value.
            let cols: Vec<&str> = line.split(' ').collect();
            assert_eq!(cols.len(), ATHENA_COLUMNS.len(), "{line}");
            cols.iter()
                .zip(ATHENA_COLUMNS)
                .map(|(v, (name, ty))| {
                    assert!(!v.is_empty(), "empty {name} in {line}");
                    match *ty {
                        // `-` in an int/bigint column reads as NULL; anything else must parse.
                        "int" | "bigint" if *v == "-" => None,
                        "int" => Some(
                            v.parse::<i32>()
                                .unwrap_or_else(|_| panic!("{name}={v}"))
                                .to_string(),
                        ),
                        "bigint" => Some(
                            v.parse::<i64>()
                                .unwrap_or_else(|_| panic!("{name}={v}"))
                                .to_string(),
                        ),
                        _ => Some(v.to_string()),
                    }
                })
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4);
    let col = |row: &Vec<Option<String>>, name: &str| {
        let i = ATHENA_COLUMNS.iter().position(|(c, _)| *c == name).unwrap();
        row[i].clone()
    };
    let s = |v: &str| Some(v.to_string());
    // Rows are sorted: eni-1235... records (ingress, then egress by start), then eni-idle.
    let ingress = &rows[0];
    assert_eq!(col(ingress, "version"), s("5"));
    assert_eq!(col(ingress, "srcaddr"), s("52.95.128.179"));
    assert_eq!(col(ingress, "bytes"), s("15044"));
    assert_eq!(col(ingress, "tcp_flags"), s("19"));
    assert_eq!(col(ingress, "pkt_src_aws_service"), s("S3"));
    assert_eq!(col(ingress, "traffic_path"), None);
    assert_eq!(col(ingress, "az_id"), s("use1-az1"));
    let to_vpc = rows
        .iter()
        .find(|r| col(r, "dstaddr") == s("10.0.3.3"))
        .unwrap();
    assert_eq!(col(to_vpc, "traffic_path"), s("1"));
    assert_eq!(col(to_vpc, "tcp_flags"), s("0"), "non-TCP flows report 0");
    let to_s3 = rows
        .iter()
        .find(|r| col(r, "dstaddr") == s("52.95.128.179"))
        .unwrap();
    assert_eq!(col(to_s3, "traffic_path"), s("8"));
    assert_eq!(col(to_s3, "pkt_dst_aws_service"), s("S3"));
    let nodata = &rows[3];
    assert_eq!(col(nodata, "log_status"), s("NODATA"));
    assert_eq!(col(nodata, "interface_id"), s("eni-idle"));
    for c in [
        "srcport",
        "dstport",
        "protocol",
        "packets",
        "bytes",
        "tcp_flags",
        "traffic_path",
    ] {
        assert_eq!(col(nodata, c), None, "{c} of NODATA");
    }
    assert_eq!(col(nodata, "start"), s(&SLOT.to_string()));
    assert_eq!(col(nodata, "end"), s(&(SLOT + 120).to_string()));
}

#[test]
fn parquet_files_have_aws_column_names_types_and_gzip() {
    let (meta, recs) = sample_records();
    let all: LogFormat = format_string(flowlog_agent::records::format::Field::ALL)
        .parse()
        .unwrap();
    let obj = one_object(&all, &meta, &recs, FileFormat::Parquet, false);
    assert_eq!(
        obj.key,
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_".to_string()
            + obj.key.rsplit('_').next().unwrap()
    );
    assert!(obj.key.ends_with(".log.parquet"), "{}", obj.key);
    assert_eq!(
        &obj.body[..4],
        b"PAR1",
        "a plain Parquet file, no outer gzip"
    );
    let reader = SerializedFileReader::new(obj.body.clone()).unwrap();
    let md = reader.metadata();
    assert_eq!(md.file_metadata().num_rows(), 4);
    let schema = md.file_metadata().schema_descr();
    assert_eq!(schema.num_columns(), 42);
    for (i, field) in all.fields().iter().enumerate() {
        let c = schema.column(i);
        assert_eq!(c.name(), field.name().replace('-', "_"));
        assert_eq!(
            c.self_type().get_basic_info().repetition(),
            Repetition::OPTIONAL
        );
        let (physical, converted, logical) = match field.name() {
            "version" | "srcport" | "dstport" | "protocol" | "tcp-flags" | "traffic-path" => (
                PhysicalType::INT32,
                ConvertedType::INT_32,
                LogicalType::integer(32, true),
            ),
            "packets" | "bytes" | "start" | "end" => (
                PhysicalType::INT64,
                ConvertedType::INT_64,
                LogicalType::integer(64, true),
            ),
            _ => (
                PhysicalType::BYTE_ARRAY,
                ConvertedType::UTF8,
                LogicalType::String,
            ),
        };
        assert_eq!(
            (c.physical_type(), c.converted_type(), c.logical_type_ref()),
            (physical, converted, Some(&logical)),
            "{}",
            c.name()
        );
    }
    for rg in md.row_groups() {
        for col in rg.columns() {
            assert!(
                matches!(col.compression(), Compression::GZIP(_)),
                "{:?}",
                col.compression()
            );
        }
    }
    let rows: Vec<Vec<(String, PqField)>> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            r.unwrap()
                .get_column_iter()
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4);
    let get = |row: &Vec<(String, PqField)>, name: &str| {
        row.iter().find(|(n, _)| n == name).unwrap().1.clone()
    };
    // Every cell, typed, against the records written out by hand (all 42 fields, in
    // Field::ALL order, from the flows and flags of sample_records and AWS's rules: ICMP ports
    // 0, traffic-path only on egress, `-` for what a record has no value for).
    const ALL_FIELDS_LINES: [&str; 4] = [
        "10 123456789012 eni-1235b8ca123456789 52.95.128.179 10.0.0.71 80 34210 6 14 15044 \
         1529511610 1529511670 ACCEPT OK vpc-01 subnet-01 i-01 19 IPv4 52.95.128.179 10.0.0.71 \
         us-east-1 use1-az1 - - S3 - ingress - - - - - - - - - - - - - -",
        "10 123456789012 eni-1235b8ca123456789 10.0.0.71 10.0.3.3 0 0 1 4 336 1529511610 \
         1529511670 ACCEPT OK vpc-01 subnet-01 i-01 0 IPv4 10.0.0.71 10.0.3.3 us-east-1 \
         use1-az1 - - - - egress 1 - - - - - - - - - - - - -",
        "10 123456789012 eni-1235b8ca123456789 10.0.0.71 52.95.128.179 34210 80 6 7 471 \
         1529511610 1529511670 ACCEPT OK vpc-01 subnet-01 i-01 3 IPv4 10.0.0.71 52.95.128.179 \
         us-east-1 use1-az1 - - - S3 egress 8 - - - - - - - - - - - - -",
        "10 123456789012 eni-idle - - - - - - - 1529511600 1529511720 - NODATA vpc-01 \
         subnet-01 i-01 - - - - us-east-1 use1-az1 - - - - - - - - - - - - - - - - - - -",
    ];
    for (row, line) in rows.iter().zip(ALL_FIELDS_LINES) {
        assert_eq!(line.split(' ').count(), 42, "{line}");
        for ((name, value), text) in row.iter().zip(line.split(' ')) {
            let as_text = match value {
                PqField::Null => "-".to_string(),
                PqField::Int(n) => n.to_string(),
                PqField::Long(n) => n.to_string(),
                PqField::Str(s) => s.clone(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(as_text, text, "{name}");
        }
    }
    let first = &rows[0];
    assert_eq!(get(first, "version"), PqField::Int(10));
    assert_eq!(get(first, "packets"), PqField::Long(14));
    assert_eq!(get(first, "bytes"), PqField::Long(15044));
    assert_eq!(get(first, "start"), PqField::Long((SLOT + 10) as i64));
    assert_eq!(get(first, "srcport"), PqField::Int(80));
    assert_eq!(get(first, "traffic_path"), PqField::Null);
    assert_eq!(get(first, "pkt_src_aws_service"), PqField::Str("S3".into()));
    assert_eq!(get(first, "log_status"), PqField::Str("OK".into()));
    let nodata = &rows[3];
    assert_eq!(get(nodata, "log_status"), PqField::Str("NODATA".into()));
    assert_eq!(get(nodata, "packets"), PqField::Null);
    assert_eq!(get(nodata, "srcaddr"), PqField::Str("-".into()));
    assert_eq!(get(nodata, "end"), PqField::Long((SLOT + 120) as i64));
}

#[test]
fn parquet_objects_roll_over_at_the_size_limit_and_keep_every_record() {
    let (meta, recs) = sample_records();
    let format = LogFormat::default();
    let mut b = Batcher::new(layout(false, true), format, meta, 300)
        .with_file_format(FileFormat::Parquet)
        .unwrap()
        .with_max_bytes(200);
    let mut objs = Vec::new();
    for _ in 0..10 {
        objs.extend(b.add(&recs, SLOT));
    }
    objs.extend(b.close_all());
    let total: i64 = objs
        .iter()
        .map(|o| {
            SerializedFileReader::new(o.body.clone())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum();
    assert_eq!(total, 40);
    assert_eq!(objs.iter().map(|o| o.records).sum::<usize>(), 40);
    assert_eq!(
        objs.len(),
        20,
        "two rows of about 140 buffered bytes reach 200 bytes"
    );
    let keys: std::collections::BTreeSet<&str> = objs.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys.len(), objs.len(), "each part has its own key");
    assert!(objs.iter().all(|o| o.key.contains("/2018/06/20/16/")));
}

/// `FlowLog` end to end on one window: an interface whose MAC is an ENI of instance metadata is
/// logged under the ENI's id with its own VPC/subnet/owner; traffic to instance metadata and
/// DHCP is left out, and an interface that had only such traffic reads NODATA.
#[test]
fn flow_log_names_enis_by_mac_and_leaves_out_aws_internal_traffic() {
    use clap::Parser;
    use flowlog_agent::{
        cli::flag_flow_log,
        cli::{OutputArgs, RecordArgs},
        inventory::discover::Interface,
        inventory::imds::Eni,
        inventory::imds::ImdsInfo,
        publish::Batch,
    };
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        records: RecordArgs,
        #[command(flatten)]
        output: OutputArgs,
    }
    let format = "${interface-id} ${account-id} ${vpc-id} ${subnet-id} ${srcaddr} ${dstaddr} ${pkt-dstaddr} ${log-status}";
    let args = Args::try_parse_from([
        "flowlog",
        "--no-imds",
        "--log-format",
        format,
        "--flow-log-id",
        "fl-0123456789abcdef0",
        "--interface-id",
        "veth9=eni-fromflag",
    ])
    .unwrap();
    let imds = ImdsInfo {
        instance_id: Some("i-0123".into()),
        region: Some("us-east-1".into()),
        az_id: Some("use1-az4".into()),
        primary_mac: Some("0e:00:00:00:00:01".into()),
        enis: vec![
            Eni {
                mac: "0e:00:00:00:00:01".into(),
                interface_id: "eni-primary".into(),
                account_id: Some("111111111111".into()),
                vpc_id: Some("vpc-1".into()),
                subnet_id: Some("subnet-1".into()),
                vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
                subnet_cidr: Some("10.0.1.0/24".parse().unwrap()),
            },
            Eni {
                mac: "0e:00:00:00:00:02".into(),
                interface_id: "eni-second".into(),
                account_id: Some("222222222222".into()),
                vpc_id: Some("vpc-1".into()),
                subnet_id: Some("subnet-2".into()),
                vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
                subnet_cidr: Some("10.0.2.0/24".parse().unwrap()),
            },
        ],
    };
    let meta = Metadata::resolve(&args.records.metadata_config(), Some(&imds)).unwrap();
    let mut fl = flag_flow_log::flow_log(&args.records, &args.output, meta).unwrap();
    let iface = |name: &str, ifindex: u32, mac: Option<&str>, v4: &str| Interface {
        name: name.into(),
        ifindex,
        mac: mac.map(str::to_string),
        ipv4: Some(v4.parse().unwrap()),
        ipv6: None,
        ..Default::default()
    };
    let interfaces = [
        (2, iface("ens5", 2, Some("0e:00:00:00:00:01"), "10.0.1.10")),
        (3, iface("ens6", 3, Some("0e:00:00:00:00:02"), "10.0.2.20")),
        (
            4,
            iface("veth9", 4, Some("02:42:ac:11:00:02"), "172.17.0.1"),
        ),
    ]
    .into_iter()
    .collect();
    let base = Flow {
        ifindex: 2,
        egress: false,
        src: "",
        dst: "",
        sport: 0,
        dport: 0,
        protocol: 17,
        packets: 2,
        bytes: 200,
        start: SLOT + 1,
        end: SLOT + 2,
        tcp_flags: 0,
    };
    let flows = [
        // A secondary address of ens5, from outside: shown as the primary.
        Flow {
            src: "10.0.9.9",
            dst: "10.0.1.99",
            sport: 5000,
            dport: 53,
            ..base
        },
        // ens6 talks only to instance metadata, the resolver and DHCP: none of it is logged.
        Flow {
            ifindex: 3,
            egress: true,
            src: "10.0.2.20",
            dst: "169.254.169.254",
            sport: 40000,
            dport: 80,
            protocol: 6,
            ..base
        },
        Flow {
            ifindex: 3,
            egress: true,
            src: "10.0.2.20",
            dst: "10.0.0.2",
            sport: 40001,
            dport: 53,
            ..base
        },
        Flow {
            ifindex: 3,
            egress: true,
            src: "10.0.2.20",
            dst: "10.0.2.1",
            sport: 68,
            dport: 67,
            ..base
        },
        Flow {
            ifindex: 4,
            src: "172.17.0.2",
            dst: "172.17.0.1",
            sport: 1234,
            dport: 80,
            protocol: 6,
            ..base
        },
    ];
    let mut batches = fl.on_window(&drained((SLOT, SLOT + 60), &flows, &[]), &interfaces);
    batches.extend(fl.close_all());
    assert_eq!(batches.len(), 1);
    let Batch::Object(obj) = &batches[0] else {
        panic!("file destination makes objects")
    };
    assert!(
        obj.key.starts_with("AWSLogs/111111111111/vpcflowlogs/us-east-1/2018/06/20/111111111111_vpcflowlogs_us-east-1_fl-0123456789abcdef0_20180620T1620Z_"),
        "{}",
        obj.key
    );
    let mut text = String::new();
    GzDecoder::new(&obj.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        text,
        "interface-id account-id vpc-id subnet-id srcaddr dstaddr pkt-dstaddr log-status\n\
         eni-fromflag 111111111111 vpc-1 subnet-1 172.17.0.2 172.17.0.1 172.17.0.1 OK\n\
         eni-primary 111111111111 vpc-1 subnet-1 10.0.9.9 10.0.1.10 10.0.1.99 OK\n\
         eni-second 222222222222 vpc-1 subnet-2 - - - NODATA\n"
    );
    assert_eq!(
        flowlog_agent::metrics::value("flowlog_aws_internal_excluded_packets_total", &[]),
        Some(6.0),
        "three flows of two packets"
    );
}
