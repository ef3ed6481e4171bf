//! TLS to PostgreSQL (`sslmode`, `sslrootcert` in the connection string) against a real
//! PostgreSQL 15 serving TLS, started by `scripts/postgres.sh` with a certificate signed
//! by a test authority. The state store and lease locks connect like the index does (one
//! connection code path), and need no pgvector extension, which this server lacks.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidewater_pgvector::{PgAdvisoryLock, PgStateStore, PgVectorConfig, PgVectorError};

/// A PostgreSQL with `ssl = on`, stopped when dropped.
struct TlsServer {
    dir: tempfile::TempDir,
    certs: tempfile::TempDir,
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

fn run(command: &mut Command) {
    let out = command.output().expect("running a command");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority `name`.key/.crt in `dir`.
fn authority(dir: &Path, name: &str) {
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ])
        .args(["-subj", &format!("/CN={name}")]));
}

impl TlsServer {
    fn start() -> Self {
        // Installs PostgreSQL 15 if missing, and with it `openssl` (its packages depend on it).
        run(Command::new("bash").arg(script()).arg("install"));
        let certs = tempfile::tempdir().unwrap();
        let dir = certs.path();
        authority(dir, "ca");
        authority(dir, "other-ca");
        // The server's certificate, for the name `localhost` only, signed by `ca`.
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(dir)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-keyout", "server.key", "-out", "server.csr"]));
        run(Command::new("openssl").current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.crt",
        ]));
        // The server reads its key only when it is the key's owner and alone to read it.
        run(Command::new("chown").args(["-R", "postgres:"]).arg(dir));
        run(Command::new("chmod")
            .arg("0600")
            .arg(dir.join("server.key")));
        run(Command::new("chmod").arg("0755").arg(dir));

        let data = tempfile::tempdir().unwrap();
        let port = tidewater_testkit::free_port();
        run(Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(data.path())
            .arg(port.to_string())
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display())));
        Self {
            dir: data,
            certs,
            port,
        }
    }

    /// A connection string to the server by the name its certificate carries, plus
    /// `tls` (e.g. `sslmode=verify-full sslrootcert=…`).
    fn dsn(&self, host: &str, tls: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres {tls}",
            self.port
        )
    }

    fn cert(&self, name: &str) -> String {
        self.certs.path().join(name).display().to_string()
    }

    /// Whether every connection of this crate's is encrypted, and how many there are.
    fn encrypted_sessions(&self) -> (bool, i64) {
        let mut admin =
            postgres::Client::connect(&self.dsn("localhost", "sslmode=disable"), postgres::NoTls)
                .expect("an unencrypted admin connection");
        let row = admin
            .query_one(
                "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = 'tidewater-pgvector'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn config(dsn: String) -> PgVectorConfig {
    PgVectorConfig {
        table_prefix: "tls".to_owned(),
        ..PgVectorConfig::new(dsn)
    }
}

/// Opens the state store and takes a lease lock: both need a working connection.
fn connect(dsn: String) -> Result<(PgStateStore, PgAdvisoryLock), PgVectorError> {
    let config = config(dsn);
    let store = PgStateStore::open(&config, "profiles")?;
    let mut lock = PgAdvisoryLock::new(&config, "profiles")?;
    lock.try_lock()?;
    Ok((store, lock))
}

#[test]
fn connections_are_encrypted_and_the_server_certificate_checked_as_sslmode_asks() {
    let server = TlsServer::start();
    let ca = server.cert("ca.crt");

    // verify-full: the authority and the name both match.
    let tls = format!("sslmode=verify-full sslrootcert={ca}");
    let (store, lock) = connect(server.dsn("localhost", &tls)).expect("verify-full connects");
    assert!(store.snapshot(None).unwrap().is_none());
    let (encrypted, sessions) = server.encrypted_sessions();
    assert!(
        sessions >= 2 && encrypted,
        "{sessions} sessions, encrypted: {encrypted}"
    );
    drop((store, lock));

    // Another name than the certificate's: refused by verify-full, accepted by verify-ca.
    let err = connect(server.dsn("db.internal", &tls)).expect_err("a name mismatch is refused");
    assert!(matches!(err, PgVectorError::Connect { .. }), "{err}");
    let tls_ca = format!("sslmode=verify-ca sslrootcert={ca}");
    connect(server.dsn("db.internal", &tls_ca)).expect("verify-ca does not check the name");

    // An authority that did not sign the certificate: refused, also by require (a root
    // file given means the chain is checked).
    let other = server.cert("other-ca.crt");
    for mode in ["verify-ca", "require"] {
        let tls = format!("sslmode={mode} sslrootcert={other}");
        let err = connect(server.dsn("localhost", &tls)).expect_err("untrusted");
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{mode}: {err}"
        );
    }

    // require and the default (prefer) without a root file: encrypted, not authenticated.
    for tls in ["sslmode=require", ""] {
        let (store, lock) = connect(server.dsn("db.internal", tls)).expect("connects");
        let (encrypted, _) = server.encrypted_sessions();
        assert!(encrypted, "{tls:?}: sessions in the clear");
        drop((store, lock));
    }
}
