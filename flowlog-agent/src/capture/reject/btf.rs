//! The running kernel's types, read from its BTF (`/sys/kernel/btf/vmlinux`): struct member
//! offsets for the drop program, the names of `enum skb_drop_reason`, and the prototype of a
//! BTF tracepoint.
//!
//! Rust eBPF has no CO-RE relocations, so the agent does here, once at start-up, what libbpf
//! does at load time for C programs: find where `sk_buff.dev` (and the rest) sit in *this*
//! kernel. aya-obj keeps BTF members crate-private; btf-rs (retis's BTF crate) exposes them.

use std::path::Path;

use anyhow::{Context, bail};
use btf_rs::{Btf, Member, Struct, Type};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// One struct member: where it is and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Offset from the start of the outer struct, in bits.
    pub bit_offset: u32,
    /// Size of the member's type in bytes (for a bitfield: of its underlying integer).
    pub size: usize,
    /// Width in bits when the member is a bitfield.
    pub bitfield_bits: Option<u32>,
}

impl Field {
    /// Byte offset; an error if the member does not start on a byte boundary.
    pub fn byte_offset(&self) -> anyhow::Result<u32> {
        if !self.bit_offset.is_multiple_of(8) {
            bail!("member at bit {} is not byte-aligned", self.bit_offset);
        }
        Ok(self.bit_offset / 8)
    }
}

/// Parsed kernel BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let btf = Btf::from_file(path)
            .with_context(|| format!("cannot read kernel BTF {}", path.display()))?;
        Ok(KernelBtf { btf })
    }

    /// The struct named `name` (vmlinux has one definition per name; forward declarations
    /// are skipped).
    fn named_struct(&self, name: &str) -> anyhow::Result<Struct> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .with_context(|| format!("no type {name} in kernel BTF"))?;
        for t in types {
            if let Type::Struct(s) = t {
                return Ok(s);
            }
        }
        bail!("kernel BTF has no struct {name}")
    }

    /// Follows typedefs and qualifiers to the type underneath.
    fn strip(&self, mut t: Type) -> anyhow::Result<Type> {
        for _ in 0..32 {
            t = match &t {
                Type::Typedef(x) => self.btf.resolve_chained_type(x)?,
                Type::Volatile(x) | Type::Const(x) | Type::Restrict(x) => {
                    self.btf.resolve_chained_type(x)?
                }
                Type::TypeTag(x) => self.btf.resolve_chained_type(x)?,
                _ => return Ok(t),
            };
        }
        bail!("typedef chain too long")
    }

    fn size_of(&self, t: Type) -> anyhow::Result<usize> {
        Ok(match self.strip(t)? {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => {
                let elem = self.btf.resolve_chained_type(&a)?;
                a.len() * self.size_of(elem)?
            }
            other => bail!("cannot size a BTF {}", other.name()),
        })
    }

    /// Finds member `name` in `s`, looking through anonymous struct/union members (the kernel
    /// wraps many `sk_buff` fields in them). Returns the member and its bit offset in `s`.
    fn find_member(&self, s: &Struct, name: &str) -> anyhow::Result<Option<(Member, u32)>> {
        for m in &s.members {
            let m_name = self.btf.resolve_name(m).unwrap_or_default();
            if m_name == name {
                return Ok(Some((m.clone(), m.bit_offset())));
            }
            if !m_name.is_empty() {
                continue;
            }
            if let Type::Struct(inner) | Type::Union(inner) =
                self.strip(self.btf.resolve_chained_type(m)?)?
                && let Some((found, off)) = self.find_member(&inner, name)?
            {
                return Ok(Some((found, m.bit_offset() + off)));
            }
        }
        Ok(None)
    }

    /// The member at `path` (e.g. `["nd_net", "net"]`) of struct `outer`, with its offset from
    /// the start of `outer`.
    pub fn field(&self, outer: &str, path: &[&str]) -> anyhow::Result<Field> {
        let mut s = self.named_struct(outer)?;
        let mut offset = 0u32;
        for (i, name) in path.iter().enumerate() {
            let Some((m, off)) = self.find_member(&s, name)? else {
                bail!(
                    "struct {outer} has no member {} in this kernel",
                    path[..=i].join(".")
                );
            };
            offset += off;
            let t = self.strip(self.btf.resolve_chained_type(&m)?)?;
            if i + 1 == path.len() {
                return Ok(Field {
                    bit_offset: offset,
                    size: self.size_of(t)?,
                    bitfield_bits: m.bitfield_size().filter(|b| *b > 0),
                });
            }
            s = match t {
                Type::Struct(inner) | Type::Union(inner) => inner,
                other => bail!(
                    "{outer}.{} is a {}, not a struct",
                    path[..=i].join("."),
                    other.name()
                ),
            };
        }
        bail!("empty member path for struct {outer}")
    }

    /// Like [`Self::field`], checked to be a whole member of `size` bytes; returns its byte
    /// offset.
    pub fn offset_of(&self, outer: &str, path: &[&str], size: usize) -> anyhow::Result<u32> {
        let f = self.field(outer, path)?;
        let name = format!("{outer}.{}", path.join("."));
        if f.bitfield_bits.is_some() || f.size != size {
            bail!(
                "{name} is {} bytes{} in this kernel, expected {size}",
                f.size,
                if f.bitfield_bits.is_some() {
                    " (a bitfield)"
                } else {
                    ""
                }
            );
        }
        f.byte_offset().with_context(|| name)
    }

    /// Members of `enum name` as (name, value).
    pub fn enum_members(&self, name: &str) -> anyhow::Result<Vec<(String, u32)>> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .with_context(|| format!("no enum {name} in kernel BTF"))?;
        for t in types {
            if let Type::Enum(e) = t {
                return e
                    .members
                    .iter()
                    .map(|m| Ok((self.btf.resolve_name(m)?, m.val())))
                    .collect();
            }
        }
        bail!("kernel BTF has no enum {name}")
    }

    /// The value of the enumerator `name` (e.g. `SKB_FCLONE_CLONE`), in whichever enum (named
    /// or anonymous) declares it; `None` when no enum does.
    pub fn enumerator(&self, name: &str) -> anyhow::Result<Option<u32>> {
        // Type ids run from 1 to the last type; the first id that does not resolve is the end.
        // (btf-rs's own type iterator is a `FallibleIterator`, a crate this one does not use.)
        let mut id = 1;
        while let Ok(t) = self.btf.resolve_type_by_id(id) {
            id += 1;
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if self.btf.resolve_name(m)? == name {
                        return Ok(Some(m.val()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Parameter types of BTF tracepoint `tp` (from `typedef ... btf_trace_<tp>`), without the
    /// leading `void *__data`: `"struct sk_buff *"`-style names, enough to check a prototype.
    pub fn tracepoint_params(&self, tp: &str) -> anyhow::Result<Vec<String>> {
        let typedef = format!("btf_trace_{tp}");
        let t = self
            .btf
            .resolve_types_by_name(&typedef)
            .with_context(|| format!("no tracepoint {tp} in kernel BTF"))?
            .into_iter()
            .next()
            .with_context(|| format!("no tracepoint {tp} in kernel BTF"))?;
        let Type::Ptr(p) = self.strip(t)? else {
            bail!("{typedef} is not a function pointer")
        };
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&p)? else {
            bail!("{typedef} is not a function pointer")
        };
        let mut out = Vec::new();
        for param in proto.parameters.iter().skip(1) {
            out.push(self.describe(self.btf.resolve_chained_type(param)?)?);
        }
        Ok(out)
    }

    /// A C-like name of a type: `struct sk_buff *`, `enum skb_drop_reason`, `void *`.
    fn describe(&self, t: Type) -> anyhow::Result<String> {
        Ok(match self.strip(t)? {
            Type::Ptr(p) => match self.btf.resolve_chained_type(&p) {
                Ok(inner) => format!("{} *", self.describe(inner)?),
                Err(_) => "void *".to_string(),
            },
            Type::Void => "void".to_string(),
            Type::Struct(s) => format!("struct {}", self.btf.resolve_name(&s).unwrap_or_default()),
            Type::Union(s) => format!("union {}", self.btf.resolve_name(&s).unwrap_or_default()),
            Type::Enum(e) => format!("enum {}", self.btf.resolve_name(&e).unwrap_or_default()),
            Type::Int(i) => self.btf.resolve_name(&i).unwrap_or_default(),
            other => other.name().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! These read the running kernel's BTF (the machines this project targets all have it).
    //! The expected values come from the same kernel through another decoder: `bpftool btf
    //! dump` (libbpf's), read by [`RawBtf`]. No value of one kernel is written here.
    use std::{
        collections::BTreeMap,
        process::{Command, Stdio},
        sync::OnceLock,
    };

    use super::*;

    fn kernel() -> KernelBtf {
        KernelBtf::open(Path::new(VMLINUX_BTF)).expect("this machine's kernel has BTF")
    }

    /// One type of `bpftool btf dump ... format raw`: `[id] KIND 'name' key=value...`, then
    /// one tab-indented line per member (`'name' type_id=N bits_offset=N [bitfield_size=N]`)
    /// or enumerator (`'NAME' val=N`).
    #[derive(Debug, Default)]
    struct RawType {
        kind: String,
        name: String,
        attrs: BTreeMap<String, i64>,
        /// (name, attributes) of each member line.
        members: Vec<(String, BTreeMap<String, i64>)>,
    }

    /// The kernel's BTF as bpftool decodes it.
    struct RawBtf {
        types: BTreeMap<i64, RawType>,
    }

    /// `key=value` pairs of a line (the numeric ones).
    fn attrs(words: &str) -> BTreeMap<String, i64> {
        words
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// `'name' rest` → (name, rest).
    fn quoted(line: &str) -> (String, &str) {
        let rest = line.trim_start().strip_prefix('\'').expect("a quoted name");
        let (name, rest) = rest.split_once('\'').expect("a closing quote");
        (name.to_string(), rest)
    }

    fn raw_btf() -> &'static RawBtf {
        static RAW: OnceLock<RawBtf> = OnceLock::new();
        RAW.get_or_init(|| {
            let out = Command::new("bpftool")
                .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
                .stdin(Stdio::null())
                .output()
                .expect("bpftool is installed (cargo xtask setup installs it)");
            assert!(
                out.status.success(),
                "bpftool: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).expect("bpftool prints UTF-8");
            let mut types = BTreeMap::new();
            let mut current: Option<(i64, RawType)> = None;
            for line in text.lines() {
                if let Some(member) = line.strip_prefix('\t') {
                    // DATASEC entries (`type_id=N offset=N size=N`) have no name first.
                    if !member.starts_with('\'') {
                        continue;
                    }
                    let (name, rest) = quoted(member);
                    if let Some((_, t)) = current.as_mut() {
                        t.members.push((name, attrs(rest)));
                    }
                    continue;
                }
                if let Some((id, t)) = current.take() {
                    types.insert(id, t);
                }
                let (id, rest) = line
                    .strip_prefix('[')
                    .and_then(|l| l.split_once("] "))
                    .unwrap_or_else(|| panic!("unexpected bpftool line {line:?}"));
                let (kind, rest) = rest.split_once(' ').expect("a kind");
                let (name, rest) = quoted(rest);
                current = Some((
                    id.parse().expect("a type id"),
                    RawType {
                        kind: kind.to_string(),
                        name,
                        attrs: attrs(rest),
                        members: Vec::new(),
                    },
                ));
            }
            if let Some((id, t)) = current {
                types.insert(id, t);
            }
            RawBtf { types }
        })
    }

    impl RawBtf {
        fn get(&self, id: i64) -> &RawType {
            &self.types[&id]
        }

        /// Through typedefs and qualifiers.
        fn strip(&self, mut id: i64) -> &RawType {
            loop {
                let t = self.get(id);
                match t.kind.as_str() {
                    "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => {
                        id = t.attrs["type_id"];
                    }
                    _ => return t,
                }
            }
        }

        fn size(&self, id: i64) -> i64 {
            let t = self.strip(id);
            match t.kind.as_str() {
                "PTR" => 8,
                "ARRAY" => t.attrs["nr_elems"] * self.size(t.attrs["type_id"]),
                _ => t.attrs["size"],
            }
        }

        /// (bit offset, type id, bitfield size) of `name` in `t`, looking into anonymous
        /// struct and union members.
        fn find(&self, t: &RawType, name: &str) -> Option<(i64, i64, Option<i64>)> {
            for (m, a) in &t.members {
                if m == name {
                    return Some((
                        a["bits_offset"],
                        a["type_id"],
                        a.get("bitfield_size").copied(),
                    ));
                }
                let inner = self.strip(a["type_id"]);
                if m == "(anon)"
                    && matches!(inner.kind.as_str(), "STRUCT" | "UNION")
                    && let Some((off, ty, bits)) = self.find(inner, name)
                {
                    return Some((a["bits_offset"] + off, ty, bits));
                }
            }
            None
        }

        /// The member at `path` of struct `outer`: (bit offset, size in bytes, bitfield size).
        fn member(&self, outer: &str, path: &[&str]) -> (u32, usize, Option<u32>) {
            let mut t = self
                .types
                .values()
                .find(|t| t.kind == "STRUCT" && t.name == outer)
                .unwrap_or_else(|| panic!("bpftool shows no struct {outer}"));
            let mut offset = 0;
            for (i, name) in path.iter().enumerate() {
                let (off, ty, bits) = self
                    .find(t, name)
                    .unwrap_or_else(|| panic!("bpftool shows no {outer}.{}", path.join(".")));
                offset += off;
                if i + 1 == path.len() {
                    return (
                        offset as u32,
                        self.size(ty) as usize,
                        bits.map(|b| b as u32),
                    );
                }
                t = self.strip(ty);
            }
            panic!("empty path")
        }

        fn enumerator(&self, name: &str) -> Option<i64> {
            self.types
                .values()
                .filter(|t| t.kind == "ENUM")
                .flat_map(|t| &t.members)
                .find(|(n, _)| n == name)
                .map(|(_, a)| a["val"])
        }
    }

    /// `path` of `outer` as KernelBtf and bpftool see it.
    fn both(outer: &str, path: &[&str]) -> (Field, Field) {
        let ours = kernel().field(outer, path).unwrap();
        let (bit_offset, size, bitfield_bits) = raw_btf().member(outer, path);
        let theirs = Field {
            bit_offset,
            size,
            bitfield_bits,
        };
        (ours, theirs)
    }

    #[test]
    fn sk_buff_members_nested_in_anonymous_unions_resolve() {
        let k = kernel();
        for (outer, path) in [
            ("sk_buff", &["len"][..]),
            ("sk_buff", &["head"]),
            // In union { struct { next, prev, union { dev, dev_scratch } }, ... }.
            ("sk_buff", &["dev"]),
            // In struct_group(headers, ...) inside an anonymous union.
            ("sk_buff", &["network_header"]),
            ("sk_buff", &["headers", "network_header"]),
            ("sk_buff", &["tc_at_ingress"]),
            ("net_device", &["ifindex"]),
            // possible_net_t is a typedef of a struct.
            ("net_device", &["nd_net", "net"]),
        ] {
            let (ours, theirs) = both(outer, path);
            assert_eq!(ours, theirs, "{outer}.{}", path.join("."));
        }
        // The anonymous struct_group and its named copy are the same bytes.
        assert_eq!(
            k.offset_of("sk_buff", &["network_header"], 2).unwrap(),
            k.offset_of("sk_buff", &["headers", "network_header"], 2)
                .unwrap()
        );
        assert_eq!(
            k.field("sk_buff", &["tc_at_ingress"])
                .unwrap()
                .bitfield_bits,
            Some(1)
        );
        let (len, _) = both("sk_buff", &["len"]);
        assert_eq!(
            k.offset_of("sk_buff", &["len"], 4).unwrap(),
            len.bit_offset / 8
        );
    }

    #[test]
    fn wrong_size_and_missing_member_are_errors_that_name_the_member() {
        let k = kernel();
        let e = k.offset_of("sk_buff", &["len"], 8).unwrap_err().to_string();
        assert_eq!(e, "sk_buff.len is 4 bytes in this kernel, expected 8");
        let e = k
            .field("sk_buff", &["no_such_member"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "struct sk_buff has no member no_such_member in this kernel"
        );
    }

    #[test]
    fn enumerators_of_anonymous_enums_resolve() {
        // include/linux/skbuff.h: enum { SKB_FCLONE_UNAVAILABLE, SKB_FCLONE_ORIG,
        // SKB_FCLONE_CLONE }.
        let k = kernel();
        let clone = raw_btf()
            .enumerator("SKB_FCLONE_CLONE")
            .expect("bpftool shows SKB_FCLONE_CLONE");
        assert_eq!(
            k.enumerator("SKB_FCLONE_CLONE").unwrap(),
            Some(clone as u32)
        );
        assert_eq!(k.enumerator("NO_SUCH_ENUMERATOR_X").unwrap(), None);
        for bitfield in ["cloned", "fclone"] {
            let (ours, theirs) = both("sk_buff", &[bitfield]);
            assert!(theirs.bitfield_bits.is_some(), "{bitfield} is a bitfield");
            assert_eq!(ours, theirs, "sk_buff.{bitfield}");
        }
    }

    #[test]
    fn kfree_skb_tracepoint_prototype() {
        // The drop program's arguments (include/trace/events/skb.h since 5.17; later kernels
        // add parameters after these).
        let params = kernel().tracepoint_params("kfree_skb").unwrap();
        assert_eq!(
            params[..3],
            ["struct sk_buff *", "void *", "enum skb_drop_reason"]
        );
    }
}
