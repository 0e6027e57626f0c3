//! Golden records: every example record line of AWS's documentation (spec §5), reproduced byte
//! for byte from constructed flows, interfaces, metadata flags and `--log-format` strings, through
//! the same builder and formatter the agent runs.

mod support;

use flowlog_agent::{
    capture::reject::verdict::Action, inventory::metadata::Metadata, records::FlowRecord,
    records::format::LogFormat,
};
use support::{Flow, build, drained, fixture, format_string, iface, metadata};

const TCP: u8 = 6;
const ICMP: u8 = 1;
/// The ENI id in AWS's examples.
const AWS_ENI: &str = "eni-1235b8ca123456789";

fn render(format: &str, meta: &Metadata, records: &[FlowRecord]) -> Vec<String> {
    let format: LogFormat = format.parse().expect("format parses");
    records.iter().map(|r| format.render(r, meta)).collect()
}

fn default_format() -> String {
    format_string(LogFormat::default().fields())
}

fn reject(mut rec: FlowRecord) -> FlowRecord {
    rec.traffic.as_mut().expect("an OK record").action = Action::Reject;
    rec
}

/// Records of one window of `flows`, all on interface 2 (`flow`'s), an ENI with primary IPv4
/// address `ipv4` and no IPv6 address.
fn build_on_eni(eni: &str, ipv4: &str, window: (u64, u64), flows: &[Flow<'_>]) -> Vec<FlowRecord> {
    build(
        &drained(window, flows, &[]),
        &[(2, iface(eni, Some(ipv4), None))],
    )
}

fn flow<'a>(
    egress: bool,
    src: &'a str,
    dst: &'a str,
    sport: u16,
    dport: u16,
    protocol: u8,
) -> Flow<'a> {
    Flow {
        ifindex: 2,
        egress,
        src,
        dst,
        sport,
        dport,
        protocol,
        packets: 0,
        bytes: 0,
        start: 0,
        end: 0,
        tcp_flags: 0,
    }
}

#[test]
fn v2_accepted_ssh() {
    let meta = metadata(&["--account-id", "123456789010"]);
    let f = Flow {
        packets: 20,
        bytes: 4249,
        start: 1418530010,
        end: 1418530070,
        tcp_flags: 2,
        ..flow(false, "172.31.16.139", "172.31.16.21", 20641, 22, TCP)
    };
    let recs = build_on_eni(AWS_ENI, "172.31.16.21", (1418530000, 1418530080), &[f]);
    assert_eq!(
        render(&default_format(), &meta, &recs),
        [
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"
        ]
    );
}

#[test]
fn v2_rejected_rdp() {
    let meta = metadata(&["--account-id", "123456789010"]);
    let f = Flow {
        packets: 20,
        bytes: 4249,
        start: 1418530010,
        end: 1418530070,
        ..flow(false, "172.31.9.69", "172.31.9.12", 49761, 3389, TCP)
    };
    let recs = build_on_eni(AWS_ENI, "172.31.9.12", (1418530000, 1418530080), &[f]);
    let recs: Vec<FlowRecord> = recs.into_iter().map(reject).collect();
    assert_eq!(
        render(&default_format(), &meta, &recs),
        [
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
        ]
    );
}

#[test]
fn v2_nodata_and_skipdata() {
    let meta = metadata(&["--account-id", "123456789010"]);
    let watched = [
        (2, iface("eni-1235b8ca123456789", Some("10.0.0.5"), None)),
        (3, iface("eni-11111111aaaaaaaaa", Some("10.0.0.6"), None)),
    ];
    let recs = build(&drained((1431280876, 1431280934), &[], &[3]), &watched);
    assert_eq!(
        render(&default_format(), &meta, &recs),
        // Sorted by interface id.
        [
            "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
        ]
    );
}

#[test]
fn v2_ipv6_ssh() {
    let meta = metadata(&["--account-id", "123456789010"]);
    let f = Flow {
        packets: 54,
        bytes: 8855,
        start: 1477913708,
        end: 1477913820,
        ..flow(
            false,
            "2001:db8:1234:a100:8d6e:3477:df66:f105",
            "2001:db8:1234:a102:3304:8879:34cf:4071",
            34892,
            22,
            TCP,
        )
    };
    let eni = iface(
        "eni-1235b8ca123456789",
        Some("10.0.0.5"),
        Some("2001:db8:1234:a102:3304:8879:34cf:4071"),
    );
    let recs = build(&drained((1477913700, 1477913880), &[f], &[]), &[(2, eni)]);
    assert_eq!(
        render(&default_format(), &meta, &recs),
        [
            "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK"
        ]
    );
}

#[test]
fn v2_icmp_ping_accepted_and_reply_rejected() {
    let meta = metadata(&["--account-id", "123456789010"]);
    let ping = Flow {
        packets: 4,
        bytes: 336,
        start: 1432917027,
        end: 1432917142,
        ..flow(false, "203.0.113.12", "172.31.16.139", 0, 0, ICMP)
    };
    let reply = Flow {
        packets: 4,
        bytes: 336,
        start: 1432917094,
        end: 1432917142,
        ..flow(true, "172.31.16.139", "203.0.113.12", 0, 0, ICMP)
    };
    let recs = build_on_eni(
        AWS_ENI,
        "172.31.16.139",
        (1432917000, 1432917200),
        &[ping, reply],
    );
    assert_eq!(recs.len(), 2);
    let recs = vec![recs[0].clone(), reject(recs[1].clone())];
    assert_eq!(
        render(&default_format(), &meta, &recs),
        [
            "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
        ]
    );
}

#[test]
fn v3_custom_format_with_tcp_flags() {
    let meta = metadata(&[
        "--account-id",
        "123456789010",
        "--vpc-id",
        "vpc-abcdefab012345678",
        "--subnet-id",
        "subnet-aaaaaaaa012345678",
        "--instance-id",
        "i-01234567890123456",
    ]);
    let format = "${version} ${vpc-id} ${subnet-id} ${instance-id} ${interface-id} ${account-id} ${type} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${pkt-srcaddr} ${pkt-dstaddr} ${protocol} ${bytes} ${packets} ${start} ${end} ${action} ${tcp-flags} ${log-status}";
    let inbound = Flow {
        packets: 8,
        bytes: 568,
        start: 1566848875,
        end: 1566848933,
        tcp_flags: 2,
        ..flow(false, "52.213.180.42", "10.0.0.62", 43416, 5001, TCP)
    };
    let outbound = Flow {
        packets: 7,
        bytes: 376,
        start: 1566848875,
        end: 1566848933,
        tcp_flags: 18,
        ..flow(true, "10.0.0.62", "52.213.180.42", 5001, 43416, TCP)
    };
    let recs = build_on_eni(
        AWS_ENI,
        "10.0.0.62",
        (1566848860, 1566848940),
        &[inbound, outbound],
    );
    assert_eq!(
        render(format, &meta, &recs),
        [
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43416 10.0.0.62 52.213.180.42 6 376 7 1566848875 1566848933 ACCEPT 18 OK",
        ]
    );
}

#[test]
fn v5_custom_format_with_aws_service_and_traffic_path() {
    let ranges = fixture("ip-ranges.json");
    let meta = metadata(&[
        "--account-id",
        "123456789012",
        "--vpc-id",
        "vpc-abcdefab012345678",
        "--subnet-id",
        "subnet-aaaaaaaa012345678",
        "--instance-id",
        "i-0c50d5961bcb2d47b",
        "--region",
        "ap-southeast-2",
        "--az-id",
        "apse2-az3",
        "--vpc-cidr",
        "10.0.0.0/16",
        "--traffic-path",
        "0.0.0.0/0=8",
        "--aws-ip-ranges",
        ranges.to_str().unwrap(),
    ]);
    let format = "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${start} ${end} ${type} ${packets} ${bytes} ${account-id} ${vpc-id} ${subnet-id} ${instance-id} ${interface-id} ${region} ${az-id} ${sublocation-type} ${sublocation-id} ${action} ${tcp-flags} ${pkt-srcaddr} ${pkt-dstaddr} ${pkt-src-aws-service} ${pkt-dst-aws-service} ${traffic-path} ${flow-direction} ${log-status}";
    let inbound = Flow {
        packets: 14,
        bytes: 15044,
        start: 1616729292,
        end: 1616729349,
        tcp_flags: 19,
        ..flow(false, "52.95.128.179", "10.0.0.71", 80, 34210, TCP)
    };
    let outbound = Flow {
        packets: 7,
        bytes: 471,
        start: 1616729292,
        end: 1616729349,
        tcp_flags: 3,
        ..flow(true, "10.0.0.71", "52.95.128.179", 34210, 80, TCP)
    };
    let recs = build_on_eni(
        AWS_ENI,
        "10.0.0.71",
        (1616729280, 1616729400),
        &[inbound, outbound],
    );
    assert_eq!(
        render(format, &meta, &recs),
        [
            "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK",
            "5 10.0.0.71 52.95.128.179 34210 80 6 1616729292 1616729349 IPv4 7 471 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 3 10.0.0.71 52.95.128.179 - S3 8 egress OK",
        ]
    );
}

#[test]
fn nat_gateway_interface_shows_its_own_address_in_dstaddr_and_the_header_in_pkt_dstaddr() {
    let meta = metadata(&[]);
    let f = Flow {
        packets: 1,
        bytes: 60,
        start: 1,
        end: 1,
        ..flow(false, "10.0.1.5", "203.0.113.5", 40000, 443, TCP)
    };
    let recs = build_on_eni(AWS_ENI, "10.0.0.220", (0, 60), &[f]);
    assert_eq!(
        render(
            "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr}",
            &meta,
            &recs
        ),
        ["- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"]
    );
}

/// AWS's v10 example shows encryption-status 1 (Nitro-encrypted): a fact of AWS's hardware that
/// a Linux host cannot know, so this agent writes `-` there, as AWS does when Encryption
/// Controls are off. Every other field of both lines is AWS's.
#[test]
fn v10_encryption_example_with_local_traffic_path() {
    let meta = metadata(&["--vpc-cidr", "10.0.0.0/16"]);
    let format = "${flow-direction} ${traffic-path} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${encryption-status}";
    let inbound = Flow {
        packets: 5,
        bytes: 400,
        start: 10,
        end: 11,
        ..flow(false, "10.0.133.8", "10.0.128.55", 43236, 80, TCP)
    };
    let outbound = Flow {
        packets: 5,
        bytes: 400,
        start: 10,
        end: 11,
        ..flow(true, "10.0.128.55", "10.0.133.8", 80, 43236, TCP)
    };
    let recs = build_on_eni("eni-1", "10.0.128.55", (0, 60), &[inbound, outbound]);
    let aws = [
        "ingress - 10.0.133.8 10.0.128.55 43236 80 1",
        "egress 1 10.0.128.55 10.0.133.8 80 43236 1",
    ];
    let ours = render(format, &meta, &recs);
    for (ours, aws) in ours.iter().zip(aws) {
        assert_eq!(
            ours.rsplit_once(' ').unwrap().0,
            aws.rsplit_once(' ').unwrap().0
        );
        assert_eq!(ours.rsplit_once(' ').unwrap().1, "-");
    }
    assert_eq!(ours.len(), 2);
    assert_eq!(
        "${encryption-status}"
            .parse::<LogFormat>()
            .unwrap()
            .version(),
        10
    );
}

/// Secondary addresses, forwarded or NAT'ed traffic: the local side always shows the primary
/// address of the packet's family; with no address of that family the header address stays.
#[test]
fn local_side_is_the_primary_address_of_the_packets_family() {
    let meta = metadata(&[]);
    let format = "${flow-direction} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr} ${type}";
    let flows = [
        Flow {
            packets: 1,
            bytes: 84,
            start: 5,
            end: 5,
            ..flow(false, "198.51.100.7", "10.0.0.99", 0, 0, ICMP)
        },
        Flow {
            packets: 1,
            bytes: 84,
            start: 6,
            end: 6,
            ..flow(true, "10.0.0.99", "198.51.100.7", 0, 0, ICMP)
        },
        Flow {
            packets: 1,
            bytes: 104,
            start: 7,
            end: 7,
            ..flow(false, "2001:db8::7", "2001:db8::99", 0, 0, 58)
        },
        Flow {
            packets: 1,
            bytes: 104,
            start: 8,
            end: 8,
            ..flow(true, "2001:db8::99", "2001:db8::7", 0, 0, 58)
        },
        Flow {
            ifindex: 3,
            packets: 1,
            bytes: 104,
            start: 9,
            end: 9,
            ..flow(true, "fe80::99", "ff02::2", 0, 0, 58)
        },
    ];
    let watched = [
        (2, iface("eni-a", Some("10.0.0.5"), Some("2001:db8::5"))),
        (3, iface("eni-b", Some("10.0.1.5"), None)),
    ];
    let recs = build(&drained((0, 60), &flows, &[]), &watched);
    assert_eq!(
        render(format, &meta, &recs),
        [
            "ingress 198.51.100.7 10.0.0.5 198.51.100.7 10.0.0.99 IPv4",
            "egress 10.0.0.5 198.51.100.7 10.0.0.99 198.51.100.7 IPv4",
            "ingress 2001:db8::7 2001:db8::5 2001:db8::7 2001:db8::99 IPv6",
            "egress 2001:db8::5 2001:db8::7 2001:db8::99 2001:db8::7 IPv6",
            "egress fe80::99 ff02::2 fe80::99 ff02::2 IPv6",
        ]
    );
}

/// Every field of versions 2-10 in one format: a value or `-` for each, one token each.
#[test]
fn all_fields_render_one_token_each() {
    let meta = metadata(&["--account-id", "123456789012", "--region", "us-east-1"]);
    let all = format_string(flowlog_agent::records::format::Field::ALL);
    let f = Flow {
        packets: 3,
        bytes: 252,
        start: 100,
        end: 102,
        ..flow(false, "10.9.0.1", "10.9.0.2", 0, 0, ICMP)
    };
    let recs = build_on_eni("eni-x", "10.9.0.2", (60, 120), &[f]);
    let line = &render(&all, &meta, &recs)[0];
    assert_eq!(
        line,
        "10 123456789012 eni-x 10.9.0.1 10.9.0.2 0 0 1 3 252 100 102 ACCEPT OK - - - 0 IPv4 10.9.0.1 10.9.0.2 us-east-1 - - - - - ingress - - - - - - - - - - - - - -"
    );
}
