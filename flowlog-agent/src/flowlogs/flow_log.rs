//! One flow log: what its records say (metadata, format) and how they are cut into delivery
//! units: objects of the S3 key layout (file, S3) or per-stream log event batches (CloudWatch).
//! Several flow logs could share one capture; `run` feeds each the same drained windows.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::bail;

use flowlog_common::FlowKey;
use tracing::debug;

use crate::{
    capture::collect::{DrainedWindow, FlowTotals, Window},
    flowlogs::spec::{FlowLogSpec, ObjectOptions},
    inventory::{discover::Interface, guest_id, metadata::Metadata},
    metrics,
    publish::{
        Batch, DeliveryUnit, DestinationSpec,
        batch::{Batcher, FinishedObject},
        events::LogEventPacker,
        layout::ObjectLayout,
    },
    records::{
        FlowRecord, WatchedInterface,
        aws_internal::AwsInternal,
        format::LogFormat,
        guest::{GuestFields, Perspective, guest_primaries},
        stream::RecordStream,
        traffic_type::TrafficType,
    },
};

pub struct FlowLog {
    pub id: String,
    packer: Packer,
    meta: Metadata,
    /// Traffic AWS does not log, left out of the records (`None`: kept).
    aws_internal: Option<AwsInternal>,
    /// `--traffic-type`: which of ACCEPT/REJECT records this flow log emits.
    traffic_type: TrafficType,
    /// From whose side guests' interfaces are logged.
    perspective: Perspective,
}

/// A streamed window of at most this many records is still written sorted, when it closes:
/// objects of small windows are deterministic (two agents watching the same traffic write the
/// same bytes), for at most this many records (~160 bytes each) held.
pub const SORTED_UP_TO: usize = 4096;

/// A window being turned into records ([`FlowLog::open_window`]).
pub struct OpenWindow {
    records: RecordStream,
    window: Window,
    /// Records go into the objects batch by batch once more than [`SORTED_UP_TO`] are pending
    /// (else: sorted, when the window closes).
    streaming: bool,
    /// Records are being written as they come: the window is too large to sort.
    unsorted: bool,
    /// Records not written yet.
    pending: Vec<FlowRecord>,
    /// Objects that reached the size limit during the window.
    finished: Vec<FinishedObject>,
}

impl OpenWindow {
    pub fn window(&self) -> Window {
        self.window
    }
}

/// How records become delivery units, as the destination takes them.
enum Packer {
    Objects(Batcher),
    LogEvents(LogEventPacker),
}

/// What every flow log of this agent shares: the `run` flags that are not a flow log's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOptions {
    /// `--include-aws-internal-traffic`.
    pub include_aws_internal_traffic: bool,
    /// `--file-rollover-seconds`.
    pub file_rollover_seconds: u64,
}

impl FlowLog {
    /// A flow log as its definition says.
    pub fn from_spec(
        spec: &FlowLogSpec,
        host: RecordOptions,
        meta: Metadata,
    ) -> anyhow::Result<Self> {
        let mut flow_log = Self::new(
            spec.id.clone(),
            spec.traffic_type,
            spec.log_format.clone(),
            &spec.destination,
            spec.options.clone(),
            host,
            meta,
        )?;
        flow_log.perspective = spec.perspective;
        Ok(flow_log)
    }

    pub fn new(
        id: String,
        traffic_type: TrafficType,
        format: LogFormat,
        destination: &DestinationSpec,
        options: ObjectOptions,
        host: RecordOptions,
        meta: Metadata,
    ) -> anyhow::Result<Self> {
        let layout = ObjectLayout {
            account_id: meta.account_id.clone(),
            region: meta.region.clone(),
            flow_log_id: id.clone(),
            hive_compatible_partitions: options.hive_compatible_partitions,
            per_hour_partition: options.per_hour_partition,
        };
        let packer = match destination.delivery_unit() {
            DeliveryUnit::LogEvents => {
                if options != ObjectOptions::default() {
                    bail!(
                        "--file-format parquet, --hive-compatible-partitions and --per-hour-partition apply to \
                           file and S3 destinations only (as AWS's DestinationOptions): drop them for CloudWatch Logs"
                    );
                }
                Packer::LogEvents(LogEventPacker::new(format, meta.clone()))
            }
            DeliveryUnit::Objects => Packer::Objects(
                Batcher::new(layout, format, meta.clone(), host.file_rollover_seconds)
                    .with_file_format(options.file_format)?,
            ),
        };
        let aws_internal = (!host.include_aws_internal_traffic).then(|| AwsInternal::new(&meta));
        Ok(FlowLog {
            id,
            packer,
            meta,
            aws_internal,
            traffic_type,
            perspective: Perspective::default(),
        })
    }

    /// What the records say beyond the packets (resolved identity, ranges).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// What records need per watched interface: its `interface-id` (ENI id by MAC, else
    /// `--interface-id`, else a guest's readable id when logged from the guest's side, else
    /// the name), primary addresses (the guest's, from its side) and owner fields.
    fn watched(&self, interfaces: &BTreeMap<u32, Interface>) -> BTreeMap<u32, WatchedInterface> {
        interfaces
            .iter()
            .map(|(&ifindex, i)| {
                let owner = i.owner.as_deref();
                let guest_view =
                    self.perspective == Perspective::Guest && owner.is_some_and(guest_id::is_guest);
                let (primary_ipv4, primary_ipv6) = match owner {
                    Some(o) if guest_view => guest_primaries(&o.guest_addrs),
                    _ => (i.ipv4, i.ipv6),
                };
                let interface_id = self
                    .meta
                    .configured_interface_id(&i.name, i.mac.as_deref())
                    .or_else(|| i.guest_id.clone().filter(|_| guest_view))
                    .unwrap_or_else(|| i.name.clone());
                let w = WatchedInterface {
                    interface_id,
                    primary_ipv4,
                    primary_ipv6,
                    // The guest's addresses are read from its side, not followed over time.
                    earlier_primaries: if guest_view {
                        Vec::new()
                    } else {
                        i.earlier_primaries.clone()
                    },
                    guest_view,
                    guest: owner.and_then(GuestFields::of).map(Arc::new),
                };
                (ifindex, w)
            })
            .collect()
    }

    /// Turns one drained window into records and returns the batches it completed: objects
    /// whose slot ended, or the window's log events. Records are sorted.
    /// `interfaces`: those the programs were attached to during the window, by ifindex.
    pub fn on_window(
        &mut self,
        drained: &DrainedWindow,
        interfaces: &BTreeMap<u32, Interface>,
    ) -> Vec<Batch> {
        let mut w = self.open_window(drained, interfaces, false);
        self.add_flows(&mut w, &drained.flows);
        self.close_window(w)
    }

    /// Starts turning a window into records as its flows arrive ([`FlowLog::add_flows`], then
    /// [`FlowLog::close_window`]). `window`: the window's counters but its flows. `streaming`:
    /// once more than [`SORTED_UP_TO`] records are pending, each batch's records go into the
    /// open objects at once, unsorted (AWS does not order records), so no window's records are
    /// held; otherwise (and always for CloudWatch Logs, whose events are packed per window)
    /// they are sorted and written when the window closes.
    pub fn open_window(
        &self,
        window: &DrainedWindow,
        interfaces: &BTreeMap<u32, Interface>,
        streaming: bool,
    ) -> OpenWindow {
        OpenWindow {
            records: RecordStream::new(window, self.watched(interfaces)),
            window: window.window,
            streaming: streaming && matches!(self.packer, Packer::Objects(_)),
            unsorted: false,
            pending: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// The ACCEPT records of the next flows of the open window.
    pub fn add_flows<'f>(
        &mut self,
        w: &mut OpenWindow,
        flows: impl IntoIterator<Item = &'f (FlowKey, FlowTotals)>,
    ) {
        let internal = self.aws_internal.as_ref();
        let excluded = |k: &FlowKey| internal.is_some_and(|x| x.matches(k));
        w.records.flows(flows, &excluded, &mut w.pending);
        if w.streaming && (w.unsorted || w.pending.len() > SORTED_UP_TO) {
            w.unsorted = true;
            self.write_pending(w);
        }
    }

    /// Writes the pending records into the open objects (text, gzip, WAL lines).
    fn write_pending(&mut self, w: &mut OpenWindow) {
        w.pending.retain(|r| self.traffic_type.keeps(r));
        if let Packer::Objects(batcher) = &mut self.packer {
            w.finished.extend(batcher.add(&w.pending, w.window.start));
            w.pending.clear();
        }
    }

    /// Every flow of the window is in: its REJECT, NODATA and SKIPDATA records, then the
    /// batches the window completed (objects whose slot ended, or the window's log events).
    pub fn close_window(&mut self, mut w: OpenWindow) -> Vec<Batch> {
        let internal = self.aws_internal.as_ref();
        let excluded = |k: &FlowKey| internal.is_some_and(|x| x.matches(k));
        let left_out = w.records.finish(&excluded, &mut w.pending);
        if left_out.flows > 0 {
            debug!(
                flows = left_out.flows,
                packets = left_out.packets,
                "left out traffic AWS does not log (--include-aws-internal-traffic keeps it)"
            );
            metrics::counter_add(
                "flowlog_aws_internal_excluded_packets_total",
                "Packets to or from AWS-internal services (instance metadata, time sync, Amazon DNS, DHCP) left out as AWS does.",
                &[],
                left_out.packets,
            );
        }
        if !w.unsorted {
            // Unstable is enough: records that compare equal are equal in every field.
            w.pending.sort_unstable();
        }
        self.write_pending(&mut w);
        match &mut self.packer {
            Packer::Objects(batcher) => {
                let mut objects = w.finished;
                objects.extend(batcher.close_until(w.window.end));
                // The objects still open now hold this closed window durably (their WALs);
                // those just finished reach disk through the spool.
                batcher.commit_window(w.window.start);
                objects.into_iter().map(Batch::Object).collect()
            }
            Packer::LogEvents(packer) => packer
                .pack(&w.pending)
                .into_iter()
                .map(Batch::LogEvents)
                .collect(),
        }
    }

    /// Keeps the open objects' closed windows durable in write-ahead logs in `dir` (the
    /// spool directory) from now on, and returns the objects an earlier run's WALs there
    /// describe, finished (see [`Batcher::recover`]); `spooled` tells which object keys the
    /// spool already holds. CloudWatch Logs batches are spooled per window and need no WAL.
    pub fn recover(
        &mut self,
        dir: &Path,
        spooled: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<Batch>> {
        match &mut self.packer {
            Packer::Objects(batcher) => {
                let (objects, _) = batcher.recover(dir, spooled)?;
                Ok(objects.into_iter().map(Batch::Object).collect())
            }
            Packer::LogEvents(_) => Ok(Vec::new()),
        }
    }

    /// The write-ahead log a finished batch replaces: to delete once the batch is spooled.
    pub fn take_wal(&mut self, batch: &Batch) -> Option<PathBuf> {
        match (&mut self.packer, batch) {
            (Packer::Objects(batcher), Batch::Object(o)) => batcher.take_wal(&o.key),
            _ => None,
        }
    }

    /// Finishes every open object (shutdown).
    pub fn close_all(&mut self) -> Vec<Batch> {
        match &mut self.packer {
            Packer::Objects(batcher) => {
                batcher.close_all().into_iter().map(Batch::Object).collect()
            }
            Packer::LogEvents(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use flowlog_common::{DIR_EGRESS, DIR_INGRESS, FAMILY_IPV4, FiveTuple, FlowKey, ipv4_mapped};

    use super::*;
    use crate::{
        capture::clock::JiffiesClock,
        inventory::owners::{Container, Owner, OwnerKind, Runtime, Vm},
        records,
    };

    const ID_A: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";
    const ID_B: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0918273645f";
    const FORMAT: &str = "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} \
        ${packets} ${bytes} ${flow-direction} ${pkt-srcaddr} ${ecs-container-id} \
        ${ecs-second-container-id} ${container-name} ${vm-name} ${instance-id} ${action} ${log-status}";

    fn flow(
        ifindex: u32,
        egress: bool,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        packets: u64,
    ) -> (FlowKey, FlowTotals) {
        let tuple = FiveTuple {
            family: FAMILY_IPV4,
            protocol: 6,
            src_addr: ipv4_mapped(src),
            dst_addr: ipv4_mapped(dst),
            src_port: sport,
            dst_port: dport,
        };
        let dir = if egress { DIR_EGRESS } else { DIR_INGRESS };
        let totals = FlowTotals {
            packets,
            bytes: packets * 60,
            first_seen_jiffies: 1_000_000_000_010,
            last_seen_jiffies: 1_000_000_000_020,
            tcp_flags: 0,
        };
        (FlowKey::new(ifindex, dir, &tuple), totals)
    }

    /// Host side `veth5a` of a container `web-1` (pod of two: `web-1` then a second), whose
    /// eth0 has 10.88.0.5; and `tap0` of a VM `test-vm`.
    fn interfaces() -> BTreeMap<u32, Interface> {
        let container = |id: &str, name: &str| Container {
            id: id.into(),
            runtime: Runtime::Podman,
            name: Some(name.into()),
            pod_uid: None,
            pod_name: None,
            pod_namespace: None,
        };
        let web = Owner {
            kind: OwnerKind::Containers(vec![container(ID_A, "web-1"), container(ID_B, "web-2")]),
            guest_ifname: Some("eth0".into()),
            guest_addrs: vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap(),
            ],
            ecs: None,
        };
        let vm = Owner {
            kind: OwnerKind::Vm(Vm {
                name: Some("test-vm".into()),
                uuid: None,
                pid: 77,
                vmm: "qemu-system-x86_64".into(),
            }),
            ..Owner::default()
        };
        let iface = |ifindex: u32, name: &str, owner: Owner| Interface {
            name: name.into(),
            ifindex,
            owner: Some(Arc::new(owner)),
            ..Interface::default()
        };
        let mut all = BTreeMap::from([(5, iface(5, "veth5a", web)), (6, iface(6, "tap0", vm))]);
        crate::inventory::guest_id::assign(&mut all);
        all
    }

    fn lines(perspective: Perspective, interface_ids: &[(&str, &str)]) -> Vec<String> {
        lines_of(FORMAT, interfaces(), perspective, interface_ids)
    }

    fn lines_of(
        format: &str,
        interfaces: BTreeMap<u32, Interface>,
        perspective: Perspective,
        interface_ids: &[(&str, &str)],
    ) -> Vec<String> {
        let meta = Metadata {
            instance_id: "i-0host".into(),
            interface_ids: interface_ids
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Metadata::default()
        };
        let mut fl = FlowLog::new(
            "fl-1".into(),
            TrafficType::All,
            format.parse().unwrap(),
            &DestinationSpec::File("/nonexistent".into()),
            ObjectOptions::default(),
            RecordOptions {
                include_aws_internal_traffic: true,
                file_rollover_seconds: 300,
            },
            meta.clone(),
        )
        .unwrap();
        fl.perspective = perspective;
        let drained = DrainedWindow {
            window: Window {
                start: 1_000_000_000,
                end: 1_000_000_060,
            },
            flows: vec![
                // What the container sent: the host side's ingress. One from a secondary
                // address (.99): srcaddr is the guest's primary, as AWS writes an ENI's.
                flow(5, false, [10, 88, 0, 5], [10, 88, 0, 6], 40000, 80, 3),
                flow(5, false, [10, 88, 0, 99], [10, 88, 0, 6], 40001, 80, 1),
                // What it received: the host side's egress.
                flow(5, true, [10, 88, 0, 6], [10, 88, 0, 5], 80, 40000, 2),
                flow(6, false, [192, 168, 7, 2], [192, 168, 7, 1], 5353, 53, 4),
            ],
            ifaces: BTreeMap::new(),
            lost: Default::default(),
            clock: JiffiesClock::one_ns_per_jiffy(0),
            rejects: Vec::new(),
            other_drops: Vec::new(),
            drop_reasons: None,
        };
        let watched = fl.watched(&interfaces);
        let records = records::build(&drained, &watched, &|_| false);
        let format: LogFormat = format.parse().unwrap();
        let mut out: Vec<String> = records.iter().map(|r| format.render(r, &meta)).collect();
        out.sort();
        out
    }

    #[test]
    fn guests_are_logged_from_their_side_with_their_owner() {
        let a = format!("{ID_A} {ID_B} web-1");
        assert_eq!(
            lines(Perspective::Guest, &[]),
            [
                "7 test-vm.tap0 192.168.7.2 192.168.7.1 5353 53 4 240 egress 192.168.7.2 - - - test-vm test-vm ACCEPT OK".to_string(),
                format!("7 web-1.eth0 10.88.0.5 10.88.0.6 40000 80 3 180 egress 10.88.0.5 {a} - i-0host ACCEPT OK"),
                format!("7 web-1.eth0 10.88.0.5 10.88.0.6 40001 80 1 60 egress 10.88.0.99 {a} - i-0host ACCEPT OK"),
                format!("7 web-1.eth0 10.88.0.6 10.88.0.5 80 40000 2 120 ingress 10.88.0.6 {a} - i-0host ACCEPT OK"),
            ]
        );
    }

    #[test]
    fn the_host_perspective_keeps_the_host_sides_view_and_the_owner_fields() {
        let a = format!("{ID_A} {ID_B} web-1");
        assert_eq!(
            lines(Perspective::Host, &[]),
            [
                "7 tap0 192.168.7.2 192.168.7.1 5353 53 4 240 ingress 192.168.7.2 - - - test-vm test-vm ACCEPT OK".to_string(),
                format!("7 veth5a 10.88.0.5 10.88.0.6 40000 80 3 180 ingress 10.88.0.5 {a} - i-0host ACCEPT OK"),
                format!("7 veth5a 10.88.0.6 10.88.0.5 80 40000 2 120 egress 10.88.0.6 {a} - i-0host ACCEPT OK"),
                format!("7 veth5a 10.88.0.99 10.88.0.6 40001 80 1 60 ingress 10.88.0.99 {a} - i-0host ACCEPT OK"),
            ]
        );
    }

    #[test]
    fn interface_id_flags_win_over_the_guests_id() {
        let got = lines(Perspective::Guest, &[("veth5a", "eni-0web")]);
        assert!(
            got.iter().filter(|l| l.starts_with("7 eni-0web ")).count() == 3,
            "{got:#?}"
        );
        assert!(got.iter().all(|l| !l.contains("web-1.eth0")), "{got:#?}");
    }

    /// An ECS task's container: the `ecs-*` fields from AWS's documented introspection answer
    /// (ECS Developer Guide, "Amazon ECS container introspection": task
    /// `.../task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec`, family `nginx-efs`, version 2,
    /// cluster `default`). The interface has no other flow: only NODATA, which carries them too.
    #[test]
    fn ecs_fields_come_from_the_owners_task() {
        const DOCKER_ID: &str = "79c796ed2a7f864f485c76f83f3165488097279d296a7c05bd5201a1c69b2920";
        let owner = Owner {
            kind: OwnerKind::Containers(vec![Container {
                id: DOCKER_ID.into(),
                runtime: Runtime::Docker,
                name: Some("ecs-nginx-efs-2-nginx-9ac0808dd0afa495f001".into()),
                pod_uid: None,
                pod_name: None,
                pod_namespace: None,
            }]),
            guest_ifname: Some("eth0".into()),
            guest_addrs: Vec::new(),
            ecs: Some(crate::inventory::owners::EcsTask {
                task_arn: "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec".into(),
                family: "nginx-efs".into(),
                version: "2".into(),
                cluster: "default".into(),
                container_instance_arn: Some("arn:aws:ecs:us-west-2:012345678910:container-instance/default/f9cc75bb-0c94-46b9-bf6d-49d320bc1551".into()),
                task_id: "e01d58a8-151b-40e8-bc01-22647b9ecfec".into(),
                container_ids: vec![DOCKER_ID.into()],
            }),
        };
        let mut ifaces = BTreeMap::from([(
            9,
            Interface {
                name: "veth9".into(),
                ifindex: 9,
                owner: Some(Arc::new(owner)),
                ..Interface::default()
            },
        )]);
        crate::inventory::guest_id::assign(&mut ifaces);
        let all_ecs = "${ecs-cluster-arn} ${ecs-cluster-name} ${ecs-container-instance-arn} \
            ${ecs-container-instance-id} ${ecs-container-id} ${ecs-second-container-id} \
            ${ecs-service-name} ${ecs-task-definition-arn} ${ecs-task-arn} ${ecs-task-id}";
        let format = format!("${{version}} ${{interface-id}} {all_ecs} ${{log-status}}");
        // (The window's flows are on other interfaces: `if5`, `if6`, not watched here.)
        let got: Vec<String> = lines_of(&format, ifaces, Perspective::Guest, &[])
            .into_iter()
            .filter(|l| !l.starts_with("7 if"))
            .collect();
        assert_eq!(
            got,
            [format!(
                "7 ecs-nginx-efs-2-nginx-9ac0808dd0afa495f001.eth0 \
                 arn:aws:ecs:us-west-2:012345678910:cluster/default default \
                 arn:aws:ecs:us-west-2:012345678910:container-instance/default/f9cc75bb-0c94-46b9-bf6d-49d320bc1551 \
                 f9cc75bb-0c94-46b9-bf6d-49d320bc1551 {DOCKER_ID} - - \
                 arn:aws:ecs:us-west-2:012345678910:task-definition/nginx-efs:2 \
                 arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec \
                 e01d58a8-151b-40e8-bc01-22647b9ecfec NODATA"
            )]
        );
    }
}
