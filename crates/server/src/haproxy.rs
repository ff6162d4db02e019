//! The HAProxy configuration of a partitioned fleet, written from its partition map so that
//! nobody computes the routing by hand.
//!
//! A user's requests (`/v1/users/{user}/...`) go to a replica holding the user's partition
//! (`crc32(user) % partitions`, which HAProxy's `crc32(0)` converter computes like zlib: the
//! partition of [`crate::fleet::partition_of`]); every other route goes to any ready replica.
//! Partitions held by the same replicas share a backend: its first holder takes the traffic and
//! the others are backups, ordered so that the primaries spread over the replicas. Every server
//! is checked on `/readyz` (a replica catching up, or dead, is taken out); a refused connection
//! takes a replica out at once, and a request it cut off is sent again to the next holder.

use crate::fleet::PartitionRange;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One replica of the fleet: a name, the address HAProxy reaches it at and the partitions it
/// holds (`serve --consume-partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// A name for the configuration (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// The partitions it holds.
    pub partitions: Vec<u32>,
}

impl std::str::FromStr for Replica {
    type Err = String;

    /// `NAME@HOST:PORT=P,P,...`, partitions as numbers or ranges (`a@10.0.0.1:8080=0-3,6`).
    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "replica {text:?}: expected NAME@HOST:PORT=PARTITIONS, e.g. a@10.0.0.1:8080=0-3"
            )
        };
        let (name, rest) = text.split_once('@').ok_or_else(shape)?;
        let (addr, list) = rest.rsplit_once('=').ok_or_else(shape)?;
        let mut partitions = Vec::new();
        for part in list.split(',') {
            let range: PartitionRange = part
                .trim()
                .parse()
                .map_err(|e| format!("replica {text:?}: {e}"))?;
            partitions.extend(range.partitions());
        }
        Ok(Self {
            name: name.to_owned(),
            addr: addr.to_owned(),
            partitions,
        })
    }
}

/// What the configuration is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyFleet {
    /// The fleet's partitions (`serve --partitions`).
    pub partitions: u32,
    /// The replicas.
    pub replicas: Vec<Replica>,
    /// Where HAProxy listens, e.g. `:8080` or `127.0.0.1:8080`.
    pub bind: String,
    /// Milliseconds between health checks; a server is out after 2 failed checks, back after 2
    /// good ones.
    pub check_ms: u32,
}

/// Why no configuration was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaproxyError {
    /// The partition map is not usable.
    #[error("{0}")]
    Map(String),
}

impl HaproxyFleet {
    /// Checks the map and writes the configuration: every partition held by a replica, every
    /// partition in range and listed once per replica, names and addresses unique and plain.
    /// A partition held by one replica only is allowed (a comment says it has no backup).
    pub fn config(&self) -> Result<String, HaproxyError> {
        let bad = |m: String| Err(HaproxyError::Map(m));
        if !(1..=1024).contains(&self.partitions) {
            return bad(format!(
                "partitions must be in 1..=1024, got {}",
                self.partitions
            ));
        }
        if self.replicas.is_empty() {
            return bad("no replica given".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for r in &self.replicas {
            let plain = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:[]".contains(c))
            };
            if !plain(&r.name) || r.name.contains(':') {
                return bad(format!(
                    "replica name {:?}: letters, digits, -, _ and . only",
                    r.name
                ));
            }
            if !plain(&r.addr) || !r.addr.contains(':') {
                return bad(format!(
                    "replica {}: address {:?} is not HOST:PORT",
                    r.name, r.addr
                ));
            }
            if !names.insert(&r.name) {
                return bad(format!("replica name {} is given twice", r.name));
            }
            if !addrs.insert(&r.addr) {
                return bad(format!("address {} is given twice", r.addr));
            }
            let mut seen = std::collections::HashSet::new();
            for &p in &r.partitions {
                if p >= self.partitions {
                    return bad(format!(
                        "replica {}: partition {p} is out of range (0..{})",
                        r.name, self.partitions
                    ));
                }
                if !seen.insert(p) {
                    return bad(format!("replica {}: partition {p} is given twice", r.name));
                }
            }
        }
        // Partitions grouped by the replicas holding them (in the order given).
        let mut groups: BTreeMap<Vec<usize>, Vec<u32>> = BTreeMap::new();
        for p in 0..self.partitions {
            let holders: Vec<usize> = (0..self.replicas.len())
                .filter(|&k| self.replicas[k].partitions.contains(&p))
                .collect();
            if holders.is_empty() {
                return bad(format!(
                    "partition {p} is held by no replica: its users could not be served"
                ));
            }
            groups.entry(holders).or_default().push(p);
        }
        Ok(self.write(&groups))
    }

    fn write(&self, groups: &BTreeMap<Vec<usize>, Vec<u32>>) -> String {
        let p = self.partitions;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# pinnersage fleet: {} replicas, {p} partitions (crc32(user) % {p}).\n\
             # Written by `pinnersage fleet haproxy`; write it again when the map changes.\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\n    option redispatch 1\n    \
             # A killed replica refuses at once but is taken out a few ms later: ten retries\n    \
             # (each a refused connect, under a millisecond) outlast that; a dead host times\n    \
             # out instead, and its checks take it out meanwhile.\n    \
             retries 10\n    \
             # A request cut off by a dying replica is sent again, posts too: a retried\n    \
             # event is stored once, a retried item change leaves the same item.\n    \
             retry-on conn-failure empty-response response-timeout\n    \
             # A refused connection takes the replica out at once, not after the checks.\n    \
             default-server inter {}ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down\n",
            self.replicas.len(),
            self.check_ms
        );
        let _ = writeln!(
            out,
            "frontend pinnersage\n    bind {}\n    \
             # /v1/users/{{user}}/... : the user id is the 4th path field, URL-decoded.\n    \
             http-request set-var(txn.user) path,field(4,/),url_dec if {{ path_beg /v1/users/ }}\n    \
             http-request set-var(txn.part) var(txn.user),crc32(0),mod({p}) if {{ var(txn.user) -m found }}",
            self.bind
        );
        let backend = |k: usize| format!("partitions_{k}");
        for (k, partitions) in groups.values().enumerate() {
            let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "    use_backend {} if {{ var(txn.part) -m int {} }}",
                backend(k),
                list.join(" ")
            );
        }
        let _ = writeln!(out, "    default_backend any\n");
        for (k, (holders, partitions)) in groups.iter().enumerate() {
            let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "# partitions {}{}\nbackend {}\n    option httpchk GET /readyz",
                list.join(","),
                if holders.len() < 2 {
                    ": one holder, no backup"
                } else {
                    ""
                },
                backend(k)
            );
            // The primary rotates with the group, so that primaries spread over the holders.
            let first = k % holders.len();
            for j in 0..holders.len() {
                let r = &self.replicas[holders[(first + j) % holders.len()]];
                let backup = if j == 0 { "" } else { " backup" };
                let _ = writeln!(out, "    server {} {} check{backup}", r.name, r.addr);
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "# events, items, similar items, health: any ready replica\nbackend any\n    \
             option httpchk GET /readyz\n    balance roundrobin"
        );
        for r in &self.replicas {
            let _ = writeln!(out, "    server {} {} check", r.name, r.addr);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(replicas: &[&str]) -> HaproxyFleet {
        HaproxyFleet {
            partitions: 8,
            replicas: replicas.iter().map(|r| r.parse().unwrap()).collect(),
            bind: ":8080".into(),
            check_ms: 500,
        }
    }

    #[test]
    fn partitions_held_by_the_same_replicas_share_a_backend_with_a_backup() {
        let config = fleet(&[
            "a@127.0.0.1:8081=0-3",
            "b@127.0.0.1:8082=4-7",
            "c@127.0.0.1:8083=0,1,4,5",
            "d@127.0.0.1:8084=2,3,6,7",
        ])
        .config()
        .unwrap();
        assert!(config.contains("crc32(0),mod(8)"), "{config}");
        // Primaries rotate over the groups: A, D, B, D here.
        for (partitions, primary, backup) in [
            ("0 1", "a", "c"),
            ("2 3", "d", "a"),
            ("4 5", "b", "c"),
            ("6 7", "d", "b"),
        ] {
            let route = config
                .lines()
                .find(|l| l.ends_with(&format!("-m int {partitions} }}")))
                .unwrap_or_else(|| panic!("no route for {partitions}: {config}"));
            let backend = route.split_whitespace().nth(1).unwrap();
            let servers: Vec<String> = config
                .split(&format!("backend {backend}\n"))
                .nth(1)
                .unwrap()
                .lines()
                .take_while(|l| !l.is_empty())
                .filter(|l| l.trim_start().starts_with("server"))
                .map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    format!("{} {}", words[1], words.last().unwrap())
                })
                .collect();
            assert_eq!(
                servers,
                [format!("{primary} check"), format!("{backup} backup")],
                "{config}"
            );
        }
    }

    #[test]
    fn a_map_that_cannot_serve_every_user_is_refused() {
        let no_holder = fleet(&["a@127.0.0.1:8081=0-6"]).config().unwrap_err();
        assert!(
            no_holder
                .to_string()
                .contains("partition 7 is held by no replica")
        );
        let out_of_range = fleet(&["a@127.0.0.1:8081=0-8"]).config().unwrap_err();
        assert!(out_of_range.to_string().contains("out of range"));
        let twice = fleet(&["a@h:1=0-7", "a@h:2=0-7"]).config().unwrap_err();
        assert!(twice.to_string().contains("given twice"));
        assert!("a=0-7".parse::<Replica>().is_err());
        assert!(
            "a@h:1=3-1"
                .parse::<Replica>()
                .unwrap_err()
                .contains("backwards")
        );
        let lonely = fleet(&["a@h:1=0-7"]).config().unwrap();
        assert!(lonely.contains("one holder, no backup"), "{lonely}");
    }
}
