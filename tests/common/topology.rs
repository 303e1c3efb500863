//! Redis topologies for the scale tests, all on loopback and started from the `redis-server` binary: a
//! generic server with extra arguments (TLS, ACL), a 3-master cluster (plain, TLS-only, or with an ACL user),
//! and a master + replica watched by three sentinels (plain, or over TLS with ACL users, with
//! password-protected sentinels). Certificates are made with the `openssl` CLI. Every process is killed on
//! drop; every wait polls with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, wait_for, RedisServer};

/// A field of a redis-cli INFO-like answer (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(name)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

/// A field of a redis-cli answer made of alternating name / value lines (SENTINEL MASTER, CONFIG GET).
pub fn pair_field(text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .find(|c| c[0] == name)
        .and_then(|c| c.get(1))
        .map(|v| v.to_string())
}

// ---- Cluster ----

/// A Redis Cluster of masters without replicas. `cluster-require-full-coverage no`, so the other shards keep
/// serving while one master is down (the setting redguard's per-node breakers are made for).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    scheme: &'static str,
}

/// How a [`RedisCluster`] is secured; the default is plain TCP and no credentials.
#[derive(Default, Clone, Copy)]
pub struct ClusterOptions<'a> {
    /// Clients and the cluster bus speak only TLS (`--port 0 --tls-port P --tls-cluster yes`). Client
    /// certificates are not required.
    pub tls: Option<&'a Certs>,
    /// An ACL user (name, password) on every node, with the default user turned off: `redis-cli --cluster
    /// create` and every helper call authenticate as it. (The cluster bus does not use ACL.)
    pub acl_user: Option<(&'a str, &'a str)>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, ClusterOptions::default())
    }

    /// A cluster whose clients and bus speak only TLS (`--port 0 --tls-port P --tls-cluster yes`).
    pub fn start_tls(masters: usize, certs: &Certs) -> RedisCluster {
        RedisCluster::start_with(
            masters,
            ClusterOptions {
                tls: Some(certs),
                ..ClusterOptions::default()
            },
        )
    }

    pub fn start_with(masters: usize, opts: ClusterOptions<'_>) -> RedisCluster {
        let certs = opts.tls;
        let tls_args: Vec<String> = certs.map_or_else(Vec::new, |c| {
            [
                "--tls-cluster",
                "yes",
                "--tls-cert-file",
                &c.path_str("server.crt"),
                "--tls-key-file",
                &c.path_str("server.key"),
                "--tls-ca-cert-file",
                &c.path_str("ca.crt"),
                "--tls-auth-clients",
                "no",
            ]
            .map(String::from)
            .to_vec()
        });
        let mut acl_args: Vec<String> = Vec::new();
        let mut cli_flags: Vec<String> = certs.map_or_else(Vec::new, |c| {
            vec!["--tls".into(), "--cacert".into(), c.path_str("ca.crt")]
        });
        if let Some((user, pass)) = opts.acl_user {
            acl_args.extend(["--user", user, "on", &format!(">{pass}"), "~*", "&*", "+@all"].map(String::from));
            acl_args.extend(["--user", "default", "off"].map(String::from));
            cli_flags.extend(["--user", user, "--pass", pass].map(String::from));
        }
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                let (port, bus) = (free_port(), free_port());
                let (port_s, bus_s) = (port.to_string(), bus.to_string());
                let mut args: Vec<&str> = if certs.is_some() {
                    vec!["--port", "0", "--tls-port", &port_s]
                } else {
                    vec!["--port", &port_s]
                };
                args.extend(tls_args.iter().map(String::as_str));
                args.extend(acl_args.iter().map(String::as_str));
                let flags: Vec<&str> = cli_flags.iter().map(String::as_str).collect();
                args.extend_from_slice(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus_s,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                ]);
                RedisServer::start_with(port, &args, &flags)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        // redis-cli waits for the join without a limit of its own: give it one.
        let out = super::output_within(
            Command::new("redis-cli")
                .arg("--no-auth-warning")
                .args(&cli_flags)
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
            "redis-cli --cluster create",
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            scheme: if certs.is_some() { "rediss" } else { "redis" },
        };
        for node in &cluster.nodes {
            wait_for(
                &format!("cluster_state:ok on {}", node.addr()),
                Duration::from_secs(20),
                || {
                    let info = node.cli(&["CLUSTER", "INFO"])?;
                    let ok = info_field(&info, "cluster_state").as_deref() == Some("ok")
                        && info_field(&info, "cluster_known_nodes") == Some(masters.to_string());
                    ok.then_some(())
                },
            );
        }
        cluster
    }

    /// `redis://` or `rediss://` URLs of the nodes, without credentials.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", self.scheme, n.port))
            .collect()
    }

    /// Slot ranges per master address, from CLUSTER NODES on node `via`.
    pub fn slot_owners(&self, via: usize) -> Vec<(u16, u16, String)> {
        let text = self.nodes[via].must(&["CLUSTER", "NODES"]);
        let mut owners = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") {
                continue;
            }
            let addr = fields[1].split('@').next().unwrap().to_owned();
            for range in &fields[8..] {
                if range.starts_with('[') {
                    continue; // a slot being migrated
                }
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                owners.push((a.parse().unwrap(), b.parse().unwrap(), addr.clone()));
            }
        }
        owners
    }

    /// The slot of each key, from CLUSTER KEYSLOT (one redis-cli run for all keys).
    pub fn key_slots(&self, keys: &[String]) -> Vec<u16> {
        let script: String = keys.iter().map(|k| format!("CLUSTER KEYSLOT {k}\n")).collect();
        let mut child = Command::new("redis-cli")
            .args([
                "--no-auth-warning",
                "-h",
                "127.0.0.1",
                "-p",
                &self.nodes[0].port.to_string(),
            ])
            .args(&self.nodes[0].cli_flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = super::wait_within(child, "redis-cli", super::TOOL_LIMIT);
        let slots: Vec<u16> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap_or_else(|_| panic!("KEYSLOT answered {l:?}")))
            .collect();
        assert_eq!(slots.len(), keys.len());
        slots
    }

    /// The index (in `nodes`) of the master owning each key.
    pub fn owners_of(&self, keys: &[String]) -> Vec<usize> {
        self.owners_of_via(0, keys)
    }

    /// Like [`RedisCluster::owners_of`], as node `via` sees the slot map.
    pub fn owners_of_via(&self, via: usize, keys: &[String]) -> Vec<usize> {
        let owners = self.slot_owners(via);
        self.key_slots(keys)
            .into_iter()
            .map(|slot| {
                let addr = &owners
                    .iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&slot))
                    .unwrap_or_else(|| panic!("slot {slot} has no owner"))
                    .2;
                self.nodes.iter().position(|n| &n.addr() == addr).unwrap()
            })
            .collect()
    }
}

// ---- Sentinel ----

/// How a [`SentinelGroup`] is secured; the default is plain TCP and no credentials anywhere.
#[derive(Default, Clone, Copy)]
pub struct SentinelOptions<'a> {
    /// Master, replica and sentinels listen with TLS only (`--port 0`), replicate over TLS, and the sentinels
    /// talk TLS to them and to each other (`tls-replication yes`). Client certificates are not required.
    pub tls: Option<&'a Certs>,
    /// An ACL user (name, password) on master and replica, with the default user turned off: the replica
    /// and the sentinels authenticate as it too.
    pub acl_user: Option<(&'a str, &'a str)>,
    /// `requirepass` on the sentinels (which also use it with each other).
    pub sentinel_password: Option<&'a str>,
    /// An extra ACL user (name, password) on the sentinels, beside the default user.
    pub sentinel_user: Option<(&'a str, &'a str)>,
}

/// One master, one replica and three sentinels monitoring them as `mymaster` with quorum 2.
pub struct SentinelGroup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    scheme: &'static str,
}

pub const MASTER_NAME: &str = "mymaster";

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        SentinelGroup::start_with(SentinelOptions::default())
    }

    pub fn start_with(opts: SentinelOptions<'_>) -> SentinelGroup {
        // TLS settings, as `name value` pairs for both command lines and sentinel.conf lines.
        let tls: Vec<(&str, String)> = opts.tls.map_or_else(Vec::new, |c| {
            vec![
                ("tls-cert-file", c.path_str("server.crt")),
                ("tls-key-file", c.path_str("server.key")),
                ("tls-ca-cert-file", c.path_str("ca.crt")),
                ("tls-auth-clients", "no".to_owned()),
                ("tls-replication", "yes".to_owned()),
            ]
        });
        let tls_cli: Vec<String> = opts.tls.map_or_else(Vec::new, |c| {
            vec!["--tls".into(), "--cacert".into(), c.path_str("ca.crt")]
        });
        let mut data_cli = tls_cli.clone();
        if let Some((user, pass)) = opts.acl_user {
            data_cli.extend(["--user", user, "--pass", pass].map(String::from));
        }
        let data_node = |replica_of: Option<u16>| -> RedisServer {
            let port = free_port();
            let mut args: Vec<String> = if opts.tls.is_some() {
                vec!["--port".into(), "0".into(), "--tls-port".into(), port.to_string()]
            } else {
                vec!["--port".into(), port.to_string()]
            };
            for (name, value) in &tls {
                args.extend([format!("--{name}"), value.clone()]);
            }
            if let Some((user, pass)) = opts.acl_user {
                args.extend(["--user", user, "on", &format!(">{pass}"), "~*", "&*", "+@all"].map(String::from));
                args.extend(["--user", "default", "off"].map(String::from));
                args.extend(["--masteruser", user, "--masterauth", pass].map(String::from));
            }
            if let Some(master) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let flags: Vec<&str> = data_cli.iter().map(String::as_str).collect();
            RedisServer::start_with(port, &args, &flags)
        };
        let master = data_node(None);
        let replica = data_node(Some(master.port));
        wait_for("the replica to sync", Duration::from_secs(20), || {
            let info = replica.cli(&["INFO", "replication"])?;
            (info_field(&info, "master_link_status").as_deref() == Some("up")).then_some(())
        });
        let mut sentinel_cli = tls_cli.clone();
        if let Some(pass) = opts.sentinel_password {
            sentinel_cli.extend(["--pass", pass].map(String::from));
        }
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = tempfile::tempdir().unwrap();
                let mut conf = if opts.tls.is_some() {
                    format!("port 0\ntls-port {port}\n")
                } else {
                    format!("port {port}\n")
                };
                for (name, value) in &tls {
                    conf.push_str(&format!("{name} {value}\n"));
                }
                conf.push_str(&format!(
                    "bind 127.0.0.1\nsentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 2000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    master.port
                ));
                if let Some((user, pass)) = opts.acl_user {
                    conf.push_str(&format!(
                        "sentinel auth-user {MASTER_NAME} {user}\nsentinel auth-pass {MASTER_NAME} {pass}\n"
                    ));
                }
                if let Some(pass) = opts.sentinel_password {
                    conf.push_str(&format!("requirepass {pass}\n"));
                }
                if let Some((user, pass)) = opts.sentinel_user {
                    conf.push_str(&format!("user {user} on >{pass} allchannels +@all\n"));
                }
                let conf_path = dir.path().join("sentinel.conf");
                std::fs::write(&conf_path, conf).unwrap();
                let conf_s = conf_path.to_str().unwrap().to_owned();
                let flags: Vec<&str> = sentinel_cli.iter().map(String::as_str).collect();
                // The config lives in the server's own dir: sentinel rewrites it.
                RedisServer::start_in(dir, port, &[&conf_s, "--sentinel"], &flags)
            })
            .collect();
        let group = SentinelGroup {
            master,
            replica,
            sentinels,
            scheme: if opts.tls.is_some() { "rediss" } else { "redis" },
        };
        for s in &group.sentinels {
            wait_for(
                &format!("sentinel {} to know the replica and the other sentinels", s.port),
                Duration::from_secs(30),
                || {
                    let m = s.cli(&["SENTINEL", "MASTER", MASTER_NAME])?;
                    let ready = pair_field(&m, "num-slaves").as_deref() == Some("1")
                        && pair_field(&m, "num-other-sentinels").as_deref() == Some("2");
                    ready.then_some(())
                },
            );
        }
        group
    }

    /// `redis://` or `rediss://` URLs of the sentinels, without credentials.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("{}://127.0.0.1:{}", self.scheme, s.port))
            .collect()
    }

    /// The master address the first live sentinel reports.
    pub fn master_addr(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
            let mut lines = out.lines().map(str::trim);
            Some(format!("{}:{}", lines.next()?, lines.next()?))
        })
    }
}

// ---- TLS ----

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all made by `openssl` in a temp dir.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("openssl is installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=redguard test CA"];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.crt"]);
        ca.extend_from_slice(&[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                // clientAuth too: cluster nodes present it to each other on the TLS cluster bus.
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            ("client", "redguard", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, crt, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            std::fs::write(
                d.join(&extfile),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"),
            )
            .unwrap();
            let subj = format!("/CN={cn}");
            let mut req = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
            req.extend_from_slice(&ec);
            openssl(&req);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &extfile,
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn path_str(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// A TLS-only redis-server (`--port 0 --tls-port P`), requiring client certificates if `mutual`.
    pub fn redis_server(&self, mutual: bool) -> RedisServer {
        let port = free_port();
        let (port_s, cert, key, ca) = (
            port.to_string(),
            self.path_str("server.crt"),
            self.path_str("server.key"),
            self.path_str("ca.crt"),
        );
        let auth = if mutual { "yes" } else { "no" };
        let mut flags = vec!["--tls", "--cacert", ca.as_str()];
        let (ccert, ckey) = (self.path_str("client.crt"), self.path_str("client.key"));
        if mutual {
            flags.extend_from_slice(&["--cert", &ccert, "--key", &ckey]);
        }
        RedisServer::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port_s,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                auth,
            ],
            &flags,
        )
    }
}

/// Writes `content` to a new file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}
