//! nftables: the table's fixed layout, the JSON of every rule of the model, transactions,
//! and running `nft -j -f -` (optionally inside another network namespace).
//!
//! The table (family `ip`, named by `ProxyConfig.table`):
//!
//! ```text
//! nat-prerouting  (nat, prerouting, dstnat)  jump services
//! nat-output      (nat, output, dstnat)      jump services
//! nat-postrouting (nat, postrouting, srcnat) jump masquerading
//! filter-prerouting / filter-input / filter-forward / filter-output (filter, dstnat-10)
//!                                            ct state new jump endpoints-check
//! services          ip daddr . meta l4proto . th dport vmap @service-ips
//! endpoints-check   ip daddr . meta l4proto . th dport vmap @no-endpoint-services
//! mark-for-masquerade  meta mark |= 0x4000
//! masquerading      ct status dnat, ip saddr . ip daddr @hairpin → masquerade;
//!                   mark unset → return; clear it; masquerade fully-random
//! hairpin           set of `ep . ep` for every endpoint address (pod to itself)
//! reject-chain      reject
//! svc-*/lcl-*/ext-* per Service port (see model), aff-* sets (session affinity)
//! ```
//!
//! A [`Transaction`] is a list of nft JSON commands applied by one `nft -j -f -`: the
//! kernel applies all of it or none, so a failed sync leaves the previous rules in force.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::model::{MapKey, NoEndpoints, Rule};
use super::ProxyError;

/// The mark bit that asks `nat-postrouting` to masquerade (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

pub const SERVICE_IPS_MAP: &str = "service-ips";
pub const NO_ENDPOINTS_MAP: &str = "no-endpoint-services";
pub const HAIRPIN_SET: &str = "hairpin";
const MARK_CHAIN: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";

/// An ordered list of nft JSON commands for one table.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub commands: Vec<Value>,
}

impl Transaction {
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The document `nft -j -f -` reads.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a Value of strings and numbers cannot fail.
        serde_json::to_vec(&json!({ "nftables": self.commands })).unwrap_or_default()
    }
}

/// Builds the commands of one table in a fixed order of phases, so that every object
/// exists before something refers to it and nothing is deleted while still referred to.
#[derive(Debug)]
pub struct TxBuilder {
    table: String,
    /// add table/chain/set/map.
    declare: Vec<Value>,
    /// delete map elements (before adds, so a changed element is delete + add).
    elem_delete: Vec<Value>,
    /// flush + add rule of new and changed chains.
    rules: Vec<Value>,
    /// add map elements (after the chains they jump to exist).
    elem_add: Vec<Value>,
    /// flush of chains about to be deleted (drops their references to others).
    doomed_flush: Vec<Value>,
    /// delete chains, then sets.
    delete_chains: Vec<Value>,
    delete_sets: Vec<Value>,
}

impl TxBuilder {
    pub fn new(table: &str) -> Self {
        TxBuilder {
            table: table.to_string(),
            declare: Vec::new(),
            elem_delete: Vec::new(),
            rules: Vec::new(),
            elem_add: Vec::new(),
            doomed_flush: Vec::new(),
            delete_chains: Vec::new(),
            delete_sets: Vec::new(),
        }
    }

    pub fn finish(self) -> Transaction {
        let mut commands = self.declare;
        commands.extend(self.elem_delete);
        commands.extend(self.rules);
        commands.extend(self.elem_add);
        commands.extend(self.doomed_flush);
        commands.extend(self.delete_chains);
        commands.extend(self.delete_sets);
        Transaction { commands }
    }

    fn obj(&self, name: &str) -> Value {
        json!({"family": "ip", "table": self.table, "name": name})
    }

    /// Recreates the table empty with its fixed layout (a full sync starts here: adding
    /// first makes the delete succeed when the table does not exist yet).
    pub fn recreate_table(&mut self) {
        let t = json!({"table": {"family": "ip", "name": self.table}});
        self.declare.push(json!({"add": t.clone()}));
        self.declare.push(json!({"delete": t.clone()}));
        self.declare.push(json!({"add": t}));
        let base = [
            ("nat-prerouting", "nat", "prerouting", -100, "services"),
            ("nat-output", "nat", "output", -100, "services"),
            ("nat-postrouting", "nat", "postrouting", 100, "masquerading"),
            // Before routing: the cluster's `unreachable` Service-range route would
            // otherwise answer "no route to host" before the forward hook rejects.
            (
                "filter-prerouting",
                "filter",
                "prerouting",
                -110,
                "endpoints-check",
            ),
            ("filter-input", "filter", "input", -110, "endpoints-check"),
            (
                "filter-forward",
                "filter",
                "forward",
                -110,
                "endpoints-check",
            ),
            ("filter-output", "filter", "output", -110, "endpoints-check"),
        ];
        for name in [
            MARK_CHAIN,
            "masquerading",
            "services",
            "endpoints-check",
            REJECT_CHAIN,
        ] {
            self.add_chain(name);
        }
        for (name, ty, hook, prio, _) in base {
            let mut c = self.obj(name);
            c["type"] = json!(ty);
            c["hook"] = json!(hook);
            c["prio"] = json!(prio);
            c["policy"] = json!("accept");
            self.declare.push(json!({"add": {"chain": c}}));
        }
        let mut h = self.obj(HAIRPIN_SET);
        h["type"] = json!(["ipv4_addr", "ipv4_addr"]);
        self.declare.push(json!({"add": {"set": h}}));
        for map in [SERVICE_IPS_MAP, NO_ENDPOINTS_MAP] {
            let mut m = self.obj(map);
            m["type"] = json!(["ipv4_addr", "inet_proto", "inet_service"]);
            m["map"] = json!("verdict");
            self.declare.push(json!({"add": {"map": m}}));
        }
        let dest_key = json!({"concat": [
            {"payload": {"protocol": "ip", "field": "daddr"}},
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}},
        ]});
        let mark = json!({"meta": {"key": "mark"}});
        let fixed: Vec<(&str, Vec<Value>)> = vec![
            (
                MARK_CHAIN,
                vec![json!({"mangle": {"key": mark, "value": {"|": [mark, MASQUERADE_MARK]}}})],
            ),
            (
                "masquerading",
                vec![
                    // Hairpin: DNATed back to its own source address.
                    json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
                    json!({"match": {"op": "==", "left": {"concat": [
                        {"payload": {"protocol": "ip", "field": "saddr"}},
                        {"payload": {"protocol": "ip", "field": "daddr"}},
                    ]}, "right": format!("@{HAIRPIN_SET}")}}),
                    json!({"masquerade": {"flags": ["fully-random"]}}),
                ],
            ),
            (
                "masquerading",
                vec![
                    json!({"match": {"op": "==", "left": {"&": [mark, MASQUERADE_MARK]}, "right": 0}}),
                    json!({"return": null}),
                ],
            ),
            (
                "masquerading",
                vec![
                    // Cleared so a packet that is forwarded again is not masqueraded twice.
                    json!({"mangle": {"key": mark, "value": {"^": [mark, MASQUERADE_MARK]}}}),
                    json!({"masquerade": {"flags": ["fully-random"]}}),
                ],
            ),
            (
                "services",
                vec![json!({"vmap": {"key": dest_key, "data": format!("@{SERVICE_IPS_MAP}")}})],
            ),
            (
                "endpoints-check",
                vec![json!({"vmap": {"key": dest_key, "data": format!("@{NO_ENDPOINTS_MAP}")}})],
            ),
            (REJECT_CHAIN, vec![json!({"reject": null})]),
        ];
        for (chain, expr) in fixed {
            self.push_rule(chain, expr);
        }
        for (name, _, _, _, target) in base {
            let mut expr = Vec::new();
            if name.starts_with("filter-") {
                expr.push(
                    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}),
                );
            }
            expr.push(json!({"jump": {"target": target}}));
            self.push_rule(name, expr);
        }
    }

    pub fn add_chain(&mut self, name: &str) {
        let c = self.obj(name);
        self.declare.push(json!({"add": {"chain": c}}));
    }

    pub fn add_affinity_set(&mut self, name: &str, timeout: u32) {
        let mut s = self.obj(name);
        s["type"] = json!("ipv4_addr");
        s["flags"] = json!(["timeout"]);
        s["timeout"] = json!(timeout);
        self.declare.push(json!({"add": {"set": s}}));
    }

    /// Flushes `name` and writes `rules` into it (a new chain is empty; flushing it in the
    /// same transaction is harmless).
    pub fn write_chain(&mut self, name: &str, rules: &[Rule], flush: bool) {
        if flush {
            let c = self.obj(name);
            self.rules.push(json!({"flush": {"chain": c}}));
        }
        for r in rules {
            self.push_rule(name, rule_expr(r));
        }
    }

    pub fn delete_chain(&mut self, name: &str) {
        let c = self.obj(name);
        self.doomed_flush
            .push(json!({"flush": {"chain": c.clone()}}));
        self.delete_chains.push(json!({"delete": {"chain": c}}));
    }

    pub fn delete_set(&mut self, name: &str) {
        let s = self.obj(name);
        self.delete_sets.push(json!({"delete": {"set": s}}));
    }

    pub fn add_service_ip(&mut self, key: &MapKey, chain: &str) {
        let e = self.element(
            SERVICE_IPS_MAP,
            key,
            Some(json!({"goto": {"target": chain}})),
        );
        self.elem_add.push(json!({"add": {"element": e}}));
    }

    pub fn add_no_endpoints(&mut self, key: &MapKey, v: NoEndpoints) {
        let verdict = match v {
            NoEndpoints::Reject => json!({"goto": {"target": REJECT_CHAIN}}),
            NoEndpoints::Drop => json!({"drop": null}),
        };
        let e = self.element(NO_ENDPOINTS_MAP, key, Some(verdict));
        self.elem_add.push(json!({"add": {"element": e}}));
    }

    pub fn add_hairpin(&mut self, ip: Ipv4Addr) {
        let mut e = self.obj(HAIRPIN_SET);
        e["elem"] = json!([{"concat": [ip.to_string(), ip.to_string()]}]);
        self.elem_add.push(json!({"add": {"element": e}}));
    }

    pub fn delete_hairpin(&mut self, ip: Ipv4Addr) {
        let mut e = self.obj(HAIRPIN_SET);
        e["elem"] = json!([{"concat": [ip.to_string(), ip.to_string()]}]);
        self.elem_delete.push(json!({"delete": {"element": e}}));
    }

    pub fn delete_element(&mut self, map: &str, key: &MapKey) {
        let e = self.element(map, key, None);
        self.elem_delete.push(json!({"delete": {"element": e}}));
    }

    fn element(&self, map: &str, key: &MapKey, value: Option<Value>) -> Value {
        let k = json!({"concat": [key.ip.to_string(), key.proto.nft(), key.port]});
        let elem = match value {
            Some(v) => json!([[k, v]]),
            None => json!([k]),
        };
        let mut e = self.obj(map);
        e["elem"] = elem;
        e
    }

    fn push_rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.rules.push(json!({"add": {"rule": {
            "family": "ip", "table": self.table, "chain": chain, "expr": expr,
        }}}));
    }
}

fn saddr() -> Value {
    json!({"payload": {"protocol": "ip", "field": "saddr"}})
}

fn prefix(net: &ipnet::Ipv4Net) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// The expression list of one model rule.
pub fn rule_expr(rule: &Rule) -> Vec<Value> {
    let jump_mark = json!({"jump": {"target": MARK_CHAIN}});
    match rule {
        Rule::MasqueradeOffCluster {
            cluster_ip,
            cluster_cidr,
        } => vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": cluster_ip.to_string()}}),
            json!({"match": {"op": "!=", "left": saddr(), "right": prefix(cluster_cidr)}}),
            jump_mark,
        ],
        Rule::MasqueradeExternal { cluster_cidr } => vec![
            json!({"match": {"op": "!=", "left": saddr(), "right": prefix(cluster_cidr)}}),
            jump_mark,
        ],
        Rule::PodsGoto {
            cluster_cidr,
            chain,
        } => vec![
            json!({"match": {"op": "==", "left": saddr(), "right": prefix(cluster_cidr)}}),
            json!({"goto": {"target": chain}}),
        ],
        Rule::Goto { chain } => vec![json!({"goto": {"target": chain}})],
        Rule::AffinityDnat {
            set,
            proto,
            ip,
            port,
        } => vec![
            json!({"match": {"op": "==", "left": saddr(), "right": format!("@{set}")}}),
            json!({"set": {"op": "update", "elem": saddr(), "set": format!("@{set}")}}),
            json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto.nft()}}),
            json!({"dnat": {"addr": ip.to_string(), "port": port}}),
        ],
        Rule::Dnat {
            one_in,
            remember,
            proto,
            ip,
            port,
        } => {
            let mut e = Vec::new();
            if *one_in > 1 {
                e.push(json!({"match": {"op": "==", "left": {"numgen": {"mode": "random", "mod": one_in, "offset": 0}}, "right": 0}}));
            }
            if let Some(set) = remember {
                e.push(json!({"set": {"op": "update", "elem": saddr(), "set": format!("@{set}")}}));
            }
            e.push(json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto.nft()}}));
            e.push(json!({"dnat": {"addr": ip.to_string(), "port": port}}));
            e
        }
    }
}

/// Runs `nft`, in the process's network namespace or in the one at `netns`.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<PathBuf>,
}

impl Nft {
    /// Applies one transaction atomically.
    pub fn apply(&self, tx: &Transaction) -> Result<(), ProxyError> {
        self.run(&["-j", "-f", "-"], Some(&tx.to_json()))
            .map(|_| ())
    }

    /// `nft -j list table ip <table>`; None when the table does not exist.
    pub fn list_table(&self, table: &str) -> Result<Option<Value>, ProxyError> {
        match self.run(&["-j", "list", "table", "ip", table], None) {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| ProxyError::NftOutput {
                        command: format!("list table ip {table}"),
                        source,
                    })
            }
            Err(ProxyError::Nft { stderr, .. }) if stderr.contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `nft -j list chain ip <table> <chain>`; None when it does not exist.
    pub fn list_chain(&self, table: &str, chain: &str) -> Result<Option<Value>, ProxyError> {
        match self.run(&["-j", "list", "chain", "ip", table, chain], None) {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| ProxyError::NftOutput {
                        command: format!("list chain ip {table} {chain}"),
                        source,
                    })
            }
            Err(ProxyError::Nft { stderr, .. }) if stderr.contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `nft -j list map ip <table> <map>`; None when it does not exist.
    pub fn list_map(&self, table: &str, map: &str) -> Result<Option<Value>, ProxyError> {
        match self.run(&["-j", "list", "map", "ip", table, map], None) {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| ProxyError::NftOutput {
                        command: format!("list map ip {table} {map}"),
                        source,
                    })
            }
            Err(ProxyError::Nft { stderr, .. }) if stderr.contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the table; a missing table is not an error.
    pub fn delete_table(&self, table: &str) -> Result<(), ProxyError> {
        let mut b = TxBuilder::new(table);
        // add-then-delete: succeeds whether or not the table exists.
        let t = json!({"table": {"family": "ip", "name": table}});
        b.declare.push(json!({"add": t.clone()}));
        b.declare.push(json!({"delete": t}));
        self.apply(&b.finish())
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, ProxyError> {
        let command = format!("nft {}", args.join(" "));
        let mut cmd = Command::new("nft");
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Spawned from a thread that entered the namespace (a child starts in its
        // creator's namespace), rather than with a pre-exec setns: a pre-exec hook makes
        // std fork the whole (possibly large) process instead of vfork-spawning, which
        // cost tens of milliseconds per sync.
        let mut spawn_and_wait = || -> Result<std::process::Output, ProxyError> {
            let mut child = cmd.spawn().map_err(|source| ProxyError::NftSpawn {
                command: command.clone(),
                source,
            })?;
            if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A write error shows up as nft's failure below, with its message.
                let _ = pipe.write_all(data);
            }
            let out = child
                .wait_with_output()
                .map_err(|source| ProxyError::NftSpawn {
                    command: command.clone(),
                    source,
                })?;
            Ok(out)
        };
        let out = match &self.netns {
            None => spawn_and_wait()?,
            Some(path) => std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let f = std::fs::File::open(path).map_err(|source| ProxyError::Netns {
                            path: path.clone(),
                            source,
                        })?;
                        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| ProxyError::Netns {
                                path: path.clone(),
                                source: e.into(),
                            },
                        )?;
                        spawn_and_wait()
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(ProxyError::NftSpawn {
                            command: command.clone(),
                            source: std::io::Error::other("the nft thread panicked"),
                        })
                    })
            })?,
        };
        if !out.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            stderr.truncate(4096);
            return Err(ProxyError::Nft {
                command,
                status: out.status.code(),
                stderr,
            });
        }
        Ok(out.stdout)
    }
}
