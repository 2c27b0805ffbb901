//! The configuration file shared by `pmh-server`, `pmh-load` and `pmh-admin` (design §6):
//! TOML, read into a typed [`Config`], then overridden by environment variables.
//!
//! The file is parsed in two steps. Serde reads it into private "raw" structs whose fields
//! are all optional and which reject unknown keys (`deny_unknown_fields`), so a typo such
//! as `[rocksdb] block_cahce_mib` is an error rather than a silently ignored setting. Then
//! every value is validated by hand, so that each error can name the file and the key
//! (`pmh.toml: tokens[1].municipality: municipalityCode: check digit`) instead of a byte
//! offset. Defaults are taken from the engine ([`RocksTuning::default`],
//! [`StoreConfig::default`]), never restated here, so the file and the engine cannot
//! disagree about them.
//!
//! Secrets — `pmh_id_secret`, plain `token`s — are kept only as long as needed: a plain
//! token is hashed at load time and forgotten, the secret sits in a wrapper whose `Debug`
//! prints `<redacted>`, and neither [`Config`] nor [`Token`] ever prints one. Bearer
//! tokens are checked by [`Config::authenticate`], which compares SHA-256 digests in
//! constant time.
//!
//! `docs/configuration.md` lists every key, its default and its meaning.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pmh_engine::ids::make;
use pmh_engine::options::{BackgroundPriority, CacheKind, Compression, IndexKind};
use pmh_engine::{ConsentLifetime, InsurerNumber, MunicipalityCode, PmhIdDeriver, RocksTuning, StoreConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Environment variable overriding `listen`.
pub const ENV_LISTEN: &str = "PMH_LISTEN";
/// Environment variable overriding `db`.
pub const ENV_DB: &str = "PMH_DB";
/// Environment variable overriding `pmh_id_secret` (the usual way to keep the secret out
/// of the file).
pub const ENV_PMH_ID_SECRET: &str = "PMH_PMH_ID_SECRET";
/// Environment variable overriding `consent_ttl`.
pub const ENV_CONSENT_TTL: &str = "PMH_CONSENT_TTL";

/// Default `listen`: loopback only, so a server started without a configuration is not
/// reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `db`, relative to the working directory.
pub const DEFAULT_DB: &str = "var/store";
/// The placeholder secret of the design's example; accepted with a warning.
pub const PLACEHOLDER_SECRET: &str = "change-me";
/// Default `[limits] max_body_bytes`: 64 MiB, a large municipality's daily differential
/// file with room to spare; a full file goes through `pmh-load`, not HTTP.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// Default `[limits] request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix length of the hash index when `[rocksdb] index = "hash"` and
/// `hash_index_prefix_len` is not given: store keys are uniformly random, so 8 bytes are as
/// selective as all 16.
pub const DEFAULT_HASH_INDEX_PREFIX_LEN: usize = 8;
/// Longest token `name`.
pub const MAX_TOKEN_NAME_CHARS: usize = 64;

/// A configuration error. Every variant names where the bad value came from: the file (or
/// `environment` for an environment variable) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML, or a value has the wrong type, or a key is unknown.
    Syntax {
        /// The file.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The dotted key at that place (`rocksdb.block_size`, `tokens[0].role`), when it
        /// can be told.
        key: Option<String>,
        /// What is wrong (the TOML parser's words).
        message: String,
    },
    /// A value broke a rule.
    Invalid {
        /// The file, or `environment` when the value came from an environment variable.
        file: String,
        /// The dotted key (`tokens[1].municipality`) or the environment variable.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Something needs PMH-IDs (the server, `pmh-load`) and no `pmh_id_secret` is set.
    MissingSecret {
        /// The file (or `defaults` when there was none).
        file: String,
    },
    /// Random bytes for [`Config::demo`] could not be read.
    Random(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, message } => write!(f, "{file}: cannot read the configuration: {message}"),
            ConfigError::Syntax { file, line, column, key: Some(key), message } => {
                write!(f, "{file}: line {line}, column {column}: {key}: {message}")
            }
            ConfigError::Syntax { file, line, column, key: None, message } => {
                write!(f, "{file}: line {line}, column {column}: {message}")
            }
            ConfigError::Invalid { file, key, message } => write!(f, "{file}: {key}: {message}"),
            ConfigError::MissingSecret { file } => write!(
                f,
                "{file}: pmh_id_secret: not set; it is required to derive PMH-IDs \
                 (set it in the file or in {ENV_PMH_ID_SECRET})"
            ),
            ConfigError::Random(m) => write!(f, "/dev/urandom: {m}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What a bearer token may do (design §6: municipality, gateway, admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A municipality's business system: uploads its own records.
    Municipality,
    /// A receipt gateway (eligibility network): PMH-IDs, consents, lookups.
    Gateway,
    /// An operator: access history and administration.
    Admin,
}

impl Role {
    /// The role as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Municipality => "municipality",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "municipality" => Some(Role::Municipality),
            "gateway" => Some(Role::Gateway),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[tokens]]` entry: who holds a bearer token and what it may do. Only the SHA-256
/// of the token is kept; `Debug` does not print even that.
#[derive(Clone)]
pub struct Token {
    /// Name used in logs and the access log (`name`, default `<role>-<index>`).
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The municipality a municipality token writes for (`None` for other roles).
    pub municipality: Option<MunicipalityCode>,
    /// The 公費負担者番号 a municipality token may write, sorted (empty for other roles).
    pub insurer_numbers: Vec<InsurerNumber>,
    /// SHA-256 of the token.
    sha256: [u8; 32],
}

impl Token {
    /// Whether this token may write certificates of `insurer` (a municipality token
    /// listing it in `insurer_numbers`).
    pub fn may_write(&self, insurer: InsurerNumber) -> bool {
        self.role == Role::Municipality && self.insurer_numbers.binary_search(&insurer).is_ok()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("municipality", &self.municipality)
            .field("insurer_numbers", &self.insurer_numbers)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// The PMH-ID secret. A wrapper so that no `Debug` of a containing struct prints it.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[store]`: store settings other than RocksDB tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sync_writes`: fsync the WAL on certificate writes ([`StoreConfig::sync_writes`]).
    pub sync_writes: bool,
    /// `access_log_queue`: capacity of the access-log queue
    /// ([`StoreConfig::access_log_queue`]).
    pub access_log_queue: usize,
}

/// `[limits]`: HTTP limits of `pmh-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_body_bytes`: largest request body accepted; larger gets 413
    /// `payload_too_large`.
    pub max_body_bytes: usize,
    /// `request_timeout`: longest time a request may take.
    pub request_timeout: Duration,
}

/// The configuration, validated. Build it with [`Config::load`] (file + environment),
/// [`Config::from_toml_str`] (text only) or [`Config::demo`] (quick start).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: the file name, or `defaults`; named in later errors.
    pub origin: String,
    /// `listen`: the server's socket address.
    pub listen: SocketAddr,
    /// `db`: the store directory (relative paths are relative to the working directory).
    pub db: PathBuf,
    /// `pmh_id_secret`, if set.
    pmh_id_secret: Option<Secret>,
    /// `consent_ttl`: how long a consent lasts.
    pub consent_ttl: ConsentLifetime,
    /// `[[tokens]]`, in file order.
    pub tokens: Vec<Token>,
    /// `[rocksdb]`, over the engine defaults.
    pub rocksdb: RocksTuning,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[limits]`.
    pub limits: Limits,
    /// Warnings found while loading (placeholder secret, plain tokens, a readable file
    /// holding secrets). Already sent to `tracing::warn!`; kept for binaries that print
    /// them without a tracing subscriber.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the configuration: the file at `path` (or only the defaults when `None`),
    /// then the environment overrides ([`ENV_LISTEN`], [`ENV_DB`], [`ENV_PMH_ID_SECRET`],
    /// [`ENV_CONSENT_TTL`]).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given as a function (for tests, and for
    /// callers that keep their environment elsewhere). A variable that is set, even to
    /// the empty string, overrides the file.
    pub fn load_with_env(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (src, origin) = match path {
            None => (String::new(), "defaults".to_owned()),
            Some(p) => {
                let origin = p.display().to_string();
                let bytes =
                    std::fs::read(p).map_err(|e| ConfigError::Read { file: origin.clone(), message: e.to_string() })?;
                let src = String::from_utf8(bytes)
                    .map_err(|_| ConfigError::Read { file: origin.clone(), message: "not UTF-8".into() })?;
                (src, origin)
            }
        };
        let (mut config, holds_secrets) = parse(&src, &origin, env)?;
        if let Some(p) = path.filter(|_| holds_secrets) {
            config.warnings.extend(readable_file_warning(p));
        }
        config.emit_warnings();
        Ok(config)
    }

    /// Parses configuration text; `origin` names it in errors. No environment overrides.
    pub fn from_toml_str(s: &str, origin: &str) -> Result<Config, ConfigError> {
        let (config, _) = parse(s, origin, &|_| None)?;
        config.emit_warnings();
        Ok(config)
    }

    /// A quick-start configuration for `pmh-server --db DIR --listen ADDR`: a fresh random
    /// `pmh_id_secret` and fresh random tokens for a gateway, an admin and municipality
    /// 131016 (千代田区, with the 公費負担者番号 of the synthetic data's programs there).
    /// Returns the configuration and its TOML text, to print: the tokens are needed to
    /// call the server, and the secret to reopen the same store later (a store refuses to
    /// open under another secret), so the operator should save it and use `--config`.
    pub fn demo(db: &Path) -> Result<(Config, String), ConfigError> {
        let secret = random_hex()?;
        let (gateway, admin, municipality) = (random_hex()?, random_hex()?, random_hex()?);
        let insurers: Vec<String> =
            [88, 89, 80, 54, 21].iter().map(|&law| format!("\"{}\"", make::insurer_number(law, 13, 101))).collect();
        let db_text = db.display().to_string();
        let text = format!(
            "# pmh-server quick-start configuration (generated; the tokens and the secret are random).\n\
             # Save this file and start with `pmh-server --config FILE` to keep them: a store refuses\n\
             # to open under another pmh_id_secret. See docs/configuration.md.\n\
             listen = \"{DEFAULT_LISTEN}\"\n\
             db = {db}\n\
             pmh_id_secret = \"{secret}\"\n\
             consent_ttl = \"end-of-day\"\n\
             \n\
             [[tokens]]\n\
             name = \"demo-gateway\"\n\
             role = \"gateway\"\n\
             token = \"{gateway}\"\n\
             \n\
             [[tokens]]\n\
             name = \"demo-admin\"\n\
             role = \"admin\"\n\
             token = \"{admin}\"\n\
             \n\
             [[tokens]]\n\
             name = \"demo-municipality-131016\"\n\
             role = \"municipality\"\n\
             token = \"{municipality}\"\n\
             municipality = \"131016\"\n\
             insurer_numbers = [{insurers}]\n",
            db = toml_string(&db_text),
            insurers = insurers.join(", "),
        );
        let (mut config, _) = parse(&text, "demo configuration", &|_| None)?;
        // Plain tokens are the point of a quick start; no warning about them.
        config.warnings.clear();
        config.db = db.to_path_buf();
        Ok((config, text))
    }

    /// The engine configuration: `[rocksdb]`, `[store]`, `consent_ttl` and the
    /// fingerprint of `pmh_id_secret` when one is set (a store then refuses to open under
    /// another secret).
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            rocks: self.rocksdb.clone(),
            consent_lifetime: self.consent_ttl,
            secret_fingerprint: self.pmh_id_secret.as_ref().map(|s| PmhIdDeriver::new(s.0.as_bytes()).fingerprint()),
            access_log_queue: self.store.access_log_queue,
            sync_writes: self.store.sync_writes,
        }
    }

    /// [`Config::store_config`] for `pmh-load` (`full`, `diff`, `install`, and the SST
    /// options of `full --prepare`): without the row cache
    /// ([`RocksTuning::for_offline_tools`]), with `mmap_reads` as configured. A diff reads
    /// the holders it edits: in place through mmap its edit phase took 260 ms instead of
    /// 455 ms for 100k rows. The ingestion of a prepared directory reads every key of each
    /// PlainTable file to find its largest: through buffers that took 1.7 s instead of
    /// 0.3 s at 1 M holders, 10 s at 7.4 M (docs/benchmarks.md, tenth and eleventh rounds). The pages they touch then
    /// count in the process's resident memory (for an ingestion, one file at a time); they
    /// are the page cache's.
    pub fn load_store_config(&self) -> StoreConfig {
        let mut c = self.store_config();
        c.rocks = c.rocks.for_offline_tools();
        c
    }

    /// [`Config::load_store_config`] for `pmh-admin`, which reads through buffers: its
    /// `verify` reads every value, and an unreadable page is then an error it reports
    /// rather than a `SIGBUS` that ends it.
    pub fn offline_store_config(&self) -> StoreConfig {
        let mut c = self.load_store_config();
        c.rocks.mmap_reads = false;
        c
    }

    /// The PMH-ID deriver under `pmh_id_secret`; an error when no secret is set.
    pub fn deriver(&self) -> Result<PmhIdDeriver, ConfigError> {
        match &self.pmh_id_secret {
            Some(s) => Ok(PmhIdDeriver::new(s.0.as_bytes())),
            None => Err(ConfigError::MissingSecret { file: self.origin.clone() }),
        }
    }

    /// Whether `pmh_id_secret` is set.
    pub fn has_secret(&self) -> bool {
        self.pmh_id_secret.is_some()
    }

    /// The token whose SHA-256 equals that of `bearer` (the value after `Bearer `), if any;
    /// never for an empty `bearer`. See [`Config::authenticate_index`].
    pub fn authenticate(&self, bearer: &str) -> Option<&Token> {
        self.authenticate_index(bearer).map(|i| &self.tokens[i])
    }

    /// The position in [`Config::tokens`] of the token whose SHA-256 equals that of
    /// `bearer`, if any; never for an empty `bearer`. The digests are compared in constant
    /// time and every token is compared, so the time taken says nothing about how much of
    /// a guess was right.
    pub fn authenticate_index(&self, bearer: &str) -> Option<usize> {
        if bearer.is_empty() {
            return None;
        }
        let presented = sha256(bearer.as_bytes());
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            let eq = constant_time_eq(&t.sha256, &presented);
            if eq && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    fn emit_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(config = %self.origin, "{w}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file as serde reads it: every key optional, unknown keys rejected.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    db: Option<String>,
    pmh_id_secret: Option<String>,
    consent_ttl: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    rocksdb: RawRocks,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<String>,
    role: Option<String>,
    token: Option<String>,
    token_sha256: Option<String>,
    municipality: Option<String>,
    insurer_numbers: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRocks {
    block_cache_mib: Option<u64>,
    row_cache_mib: Option<u64>,
    block_size: Option<u64>,
    bloom_bits_per_key: Option<f64>,
    data_block_hash_ratio: Option<f64>,
    cache_index_and_filter_blocks: Option<bool>,
    optimize_filters_for_hits: Option<bool>,
    mmap_reads: Option<bool>,
    memtable_bloom_ratio: Option<f64>,
    write_buffer_mib: Option<u64>,
    max_background_jobs: Option<i64>,
    compression: Option<String>,
    max_open_files: Option<i64>,
    block_restart_interval: Option<i64>,
    cache: Option<String>,
    index: Option<String>,
    hash_index_prefix_len: Option<u64>,
    background_priority: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    sync_writes: Option<bool>,
    access_log_queue: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<u64>,
    request_timeout: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Where a top-level value came from, for error messages.
#[derive(Clone, Copy)]
enum Source {
    File,
    Env(&'static str),
}

/// Validation context: the file name, and the warnings collected so far.
struct Ctx<'a> {
    file: &'a str,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.to_owned(), key: key.into(), message: message.into() }
    }

    /// An error about a top-level key that the environment may have overridden.
    fn invalid_at(&self, key: &str, source: Source, message: impl Into<String>) -> ConfigError {
        match source {
            Source::File => self.invalid(key, message),
            Source::Env(var) => {
                ConfigError::Invalid { file: "environment".into(), key: var.into(), message: message.into() }
            }
        }
    }
}

/// Text → raw → environment overrides → validated [`Config`] (warnings collected, not yet
/// emitted), and whether the text itself holds a secret (`pmh_id_secret`, a plain `token`).
fn parse(src: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(Config, bool), ConfigError> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| syntax_error(src, origin, &e))?;
    let holds_secrets = raw.pmh_id_secret.is_some() || raw.tokens.iter().any(|t| t.token.is_some());
    let mut cx = Ctx { file: origin, warnings: Vec::new() };

    let over = |file_value: Option<String>, var: &'static str| match env(var) {
        Some(v) => (Some(v), Source::Env(var)),
        None => (file_value, Source::File),
    };
    let (listen, listen_src) = over(raw.listen, ENV_LISTEN);
    let (db, db_src) = over(raw.db, ENV_DB);
    let (secret, secret_src) = over(raw.pmh_id_secret, ENV_PMH_ID_SECRET);
    let (ttl, ttl_src) = over(raw.consent_ttl, ENV_CONSENT_TTL);

    let listen = listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        cx.invalid_at(
            "listen",
            listen_src,
            format!("{listen:?} is not a socket address (IP:port, e.g. \"{DEFAULT_LISTEN}\")"),
        )
    })?;

    let db = PathBuf::from(db.unwrap_or_else(|| DEFAULT_DB.to_owned()));
    if db.as_os_str().is_empty() {
        return Err(cx.invalid_at("db", db_src, "must not be empty"));
    }

    let pmh_id_secret = match secret {
        None => None,
        Some(s) if s.is_empty() => return Err(cx.invalid_at("pmh_id_secret", secret_src, "must not be empty")),
        Some(s) => {
            if s == PLACEHOLDER_SECRET {
                cx.warnings.push(format!(
                    "pmh_id_secret is the placeholder {PLACEHOLDER_SECRET:?}: anyone who knows it can link PMH-IDs \
                     to My Numbers; set a long random secret"
                ));
            }
            Some(Secret(s))
        }
    };

    let defaults = StoreConfig::default();
    let consent_ttl = match ttl {
        None => defaults.consent_lifetime,
        Some(s) => ConsentLifetime::parse(&s).map_err(|m| cx.invalid_at("consent_ttl", ttl_src, m))?,
    };

    let mut tokens = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.into_iter().enumerate() {
        tokens.push(token(&mut cx, i, t)?);
    }
    check_unique_tokens(&cx, &tokens)?;

    let rocksdb = rocks(&cx, raw.rocksdb)?;
    let store = StoreSettings {
        sync_writes: raw.store.sync_writes.unwrap_or(defaults.sync_writes),
        access_log_queue: match raw.store.access_log_queue {
            None => defaults.access_log_queue,
            Some(n) => to_usize(n)
                .filter(|&n| n >= 1)
                .ok_or_else(|| cx.invalid("store.access_log_queue", "must be at least 1"))?,
        },
    };
    let limits = Limits {
        max_body_bytes: match raw.limits.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) => to_usize(n)
                .filter(|&n| n >= 1)
                .ok_or_else(|| cx.invalid("limits.max_body_bytes", "must be at least 1"))?,
        },
        request_timeout: match raw.limits.request_timeout {
            None => DEFAULT_REQUEST_TIMEOUT,
            Some(s) => parse_duration(&s).map_err(|m| cx.invalid("limits.request_timeout", m))?,
        },
    };

    let config = Config {
        origin: origin.to_owned(),
        listen,
        db,
        pmh_id_secret,
        consent_ttl,
        tokens,
        rocksdb,
        store,
        limits,
        warnings: cx.warnings,
    };
    Ok((config, holds_secrets))
}

/// Validates `[[tokens]]` entry `i`.
fn token(cx: &mut Ctx<'_>, i: usize, t: RawToken) -> Result<Token, ConfigError> {
    let key = |k: &str| format!("tokens[{i}].{k}");
    let role = match t.role.as_deref() {
        None => return Err(cx.invalid(key("role"), "required (municipality, gateway or admin)")),
        Some(r) => Role::parse(r)
            .ok_or_else(|| cx.invalid(key("role"), format!("{r:?} is not a role (municipality, gateway or admin)")))?,
    };
    let name = match t.name {
        None => format!("{role}-{i}"),
        Some(n) => {
            if n.trim().is_empty() || n.chars().count() > MAX_TOKEN_NAME_CHARS || n.chars().any(char::is_control) {
                return Err(cx.invalid(
                    key("name"),
                    format!("must be 1-{MAX_TOKEN_NAME_CHARS} characters, not blank, no control characters"),
                ));
            }
            n
        }
    };
    let sha256 = match (t.token, t.token_sha256) {
        (Some(_), Some(_)) => {
            return Err(cx.invalid(format!("tokens[{i}]"), "give either `token` or `token_sha256`, not both"));
        }
        (None, None) => return Err(cx.invalid(format!("tokens[{i}]"), "`token_sha256` (or `token`) is required")),
        (None, Some(h)) => parse_sha256(&h).ok_or_else(|| {
            cx.invalid(key("token_sha256"), "must be 64 hexadecimal characters (the SHA-256 of the token)")
        })?,
        (Some(plain), None) => {
            if plain.is_empty() {
                return Err(cx.invalid(key("token"), "must not be empty"));
            }
            cx.warnings.push(format!(
                "tokens[{i}] ({name}): a plain `token` is for local use only; \
                 store `token_sha256 = \"<sha256 hex of the token>\"` instead"
            ));
            sha256(plain.as_bytes())
        }
    };
    let municipality = match (role, t.municipality) {
        (Role::Municipality, None) => return Err(cx.invalid(key("municipality"), "required for a municipality token")),
        (Role::Municipality, Some(m)) => {
            Some(MunicipalityCode::parse(&m).map_err(|e| cx.invalid(key("municipality"), e.to_string()))?)
        }
        (_, Some(_)) => {
            return Err(cx.invalid(
                key("municipality"),
                format!("allowed only on a municipality token (this one is {role:?})", role = role.as_str()),
            ));
        }
        (_, None) => None,
    };
    let insurer_numbers = match (role, t.insurer_numbers) {
        (Role::Municipality, None) => {
            return Err(cx.invalid(
                key("insurer_numbers"),
                "required for a municipality token (the 公費負担者番号 it may write)",
            ));
        }
        (Role::Municipality, Some(list)) => {
            if list.is_empty() {
                return Err(cx.invalid(key("insurer_numbers"), "must list at least one 公費負担者番号"));
            }
            let mut out = Vec::with_capacity(list.len());
            for (j, n) in list.iter().enumerate() {
                out.push(
                    InsurerNumber::parse(n)
                        .map_err(|e| cx.invalid(format!("tokens[{i}].insurer_numbers[{j}]"), e.to_string()))?,
                );
            }
            out.sort_unstable();
            out.dedup();
            out
        }
        (_, Some(_)) => {
            return Err(cx.invalid(
                key("insurer_numbers"),
                format!("allowed only on a municipality token (this one is {role:?})", role = role.as_str()),
            ));
        }
        (_, None) => Vec::new(),
    };
    Ok(Token { name, role, municipality, insurer_numbers, sha256 })
}

/// Two entries with the same token would make the role of a request ambiguous; two with
/// the same name would make the logs ambiguous.
fn check_unique_tokens(cx: &Ctx<'_>, tokens: &[Token]) -> Result<(), ConfigError> {
    let mut hashes: HashMap<[u8; 32], usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        if let Some(j) = hashes.insert(t.sha256, i) {
            return Err(cx.invalid(format!("tokens[{i}]"), format!("same token as tokens[{j}]")));
        }
        if let Some(j) = names.insert(&t.name, i) {
            return Err(
                cx.invalid(format!("tokens[{i}].name"), format!("{:?} is already the name of tokens[{j}]", t.name))
            );
        }
    }
    Ok(())
}

/// `[rocksdb]` over [`RocksTuning::default`].
fn rocks(cx: &Ctx<'_>, r: RawRocks) -> Result<RocksTuning, ConfigError> {
    let mut t = RocksTuning::default();
    let k = |name: &str| format!("rocksdb.{name}");
    // A size in MiB as bytes; `off` lets 0 through (a cache turned off).
    let mib_or = |v: u64, name: &str, off: bool| -> Result<usize, ConfigError> {
        let rule = if off {
            "must be 0 (off) or a size in MiB that fits in memory"
        } else {
            "must be at least 1 (MiB) and fit in memory"
        };
        v.checked_mul(1 << 20).and_then(to_usize).filter(|_| off || v >= 1).ok_or_else(|| cx.invalid(k(name), rule))
    };
    let mib = |v: u64, name: &str| mib_or(v, name, false);
    let int = |v: i64, name: &str, lo: i64, hi: i64| -> Result<i32, ConfigError> {
        if (lo..=hi).contains(&v) {
            i32::try_from(v).map_err(|_| cx.invalid(k(name), format!("must be {lo}..={hi}")))
        } else {
            Err(cx.invalid(k(name), format!("must be {lo}..={hi}")))
        }
    };
    if let Some(v) = r.block_cache_mib {
        t.block_cache_bytes = mib(v, "block_cache_mib")?;
    }
    if let Some(v) = r.row_cache_mib {
        t.row_cache_bytes = mib_or(v, "row_cache_mib", true)?;
    }
    if let Some(v) = r.block_size {
        t.block_size = to_usize(v)
            .filter(|v| (256..=(64 << 20)).contains(v))
            .ok_or_else(|| cx.invalid(k("block_size"), "must be 256..=67108864 bytes"))?;
    }
    if let Some(v) = r.bloom_bits_per_key {
        if !(1.0..=100.0).contains(&v) {
            return Err(cx.invalid(k("bloom_bits_per_key"), "must be 1..=100"));
        }
        t.bloom_bits_per_key = v;
    }
    if let Some(v) = r.data_block_hash_ratio {
        t.data_block_hash_ratio = if v == 0.0 {
            None
        } else if v > 0.0 && v <= 1.0 {
            Some(v)
        } else {
            return Err(cx.invalid(k("data_block_hash_ratio"), "must be 0 (off) or in (0, 1]"));
        };
    }
    if let Some(v) = r.cache_index_and_filter_blocks {
        t.cache_index_and_filter_blocks = v;
    }
    if let Some(v) = r.optimize_filters_for_hits {
        t.optimize_filters_for_hits = v;
    }
    if let Some(v) = r.mmap_reads {
        t.mmap_reads = v;
    }
    if let Some(v) = r.memtable_bloom_ratio {
        if !(0.0..=0.25).contains(&v) {
            return Err(cx.invalid(k("memtable_bloom_ratio"), "must be 0 (off) ..= 0.25"));
        }
        t.memtable_bloom_ratio = v;
    }
    if let Some(v) = r.write_buffer_mib {
        t.write_buffer_bytes = mib(v, "write_buffer_mib")?;
    }
    if let Some(v) = r.max_background_jobs {
        t.max_background_jobs = int(v, "max_background_jobs", 1, 256)?;
    }
    if let Some(v) = r.compression {
        t.compression = match v.as_str() {
            "none" => Compression::None,
            "lz4" => Compression::Lz4,
            _ => return Err(cx.invalid(k("compression"), format!("{v:?}: must be \"none\" or \"lz4\""))),
        };
    }
    if let Some(v) = r.max_open_files {
        if v != -1 && v < 1 {
            return Err(cx.invalid(k("max_open_files"), "must be -1 (keep all open) or positive"));
        }
        t.max_open_files = int(v, "max_open_files", -1, i64::from(i32::MAX))?;
    }
    if let Some(v) = r.block_restart_interval {
        t.block_restart_interval = int(v, "block_restart_interval", 1, 1024)?;
    }
    if let Some(v) = r.cache {
        t.cache = match v.as_str() {
            "hyper-clock" => CacheKind::HyperClock,
            "lru" => CacheKind::Lru,
            _ => return Err(cx.invalid(k("cache"), format!("{v:?}: must be \"hyper-clock\" or \"lru\""))),
        };
    }
    if let Some(v) = r.background_priority {
        t.background_priority = match v.as_str() {
            "idle" => BackgroundPriority::Idle,
            "normal" => BackgroundPriority::Normal,
            _ => {
                return Err(cx.invalid(k("background_priority"), format!("{v:?}: must be \"idle\" or \"normal\"")));
            }
        };
    }
    let prefix_len = match r.hash_index_prefix_len {
        None => DEFAULT_HASH_INDEX_PREFIX_LEN,
        Some(v) => to_usize(v)
            .filter(|v| (1..=16).contains(v))
            .ok_or_else(|| cx.invalid(k("hash_index_prefix_len"), "must be 1..=16 (bytes)"))?,
    };
    match r.index.as_deref() {
        None | Some("binary") if r.hash_index_prefix_len.is_some() => {
            return Err(cx.invalid(k("hash_index_prefix_len"), "only meaningful with index = \"hash\""));
        }
        None => {}
        Some("binary") => t.index = IndexKind::BinarySearch,
        Some("hash") => t.index = IndexKind::Hash { prefix_len },
        Some(v) => return Err(cx.invalid(k("index"), format!("{v:?}: must be \"binary\" or \"hash\""))),
    }
    Ok(t)
}

fn to_usize(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}

/// A positive duration: a whole number followed by `ms`, `s`, `m` or `h` (`"30s"`). Used
/// for `request_timeout` and by the command-line tools' duration options.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a duration such as \"30s\""))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(d)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// 64 hex digits (either case) → 32 bytes.
fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = char::from(b[2 * i]).to_digit(16)?;
        let lo = char::from(b[2 * i + 1]).to_digit(16)?;
        *o = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ.
/// Whether two secrets' bytes are equal, in a time that depends only on their lengths
/// (tokens, their digests, CSRF tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

/// 32 bytes of /dev/urandom as 64 lowercase hex characters: a fresh secret, token or
/// session id.
pub fn random_secret() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn random_hex() -> Result<String, ConfigError> {
    random_secret().map_err(|e| ConfigError::Random(e.to_string()))
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A warning when the file at `path`, which holds a secret (`pmh_id_secret` or a plain
/// `token`), may be read by other users.
fn readable_file_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "{} holds secrets and other users may read it (mode {:o}); chmod 600 it, or pass the secret in \
                 {ENV_PMH_ID_SECRET}",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

// ---------------------------------------------------------------------------------------
// Naming the key of a serde/TOML error.

/// Converts a TOML error into one line naming the file, the place and — when it can be
/// told — the key.
fn syntax_error(src: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    let message = e.message().trim().replace('\n', "; ").replacen("unknown field", "unknown key", 1);
    let key = e.span().and_then(|_| key_at(src, offset));
    ConfigError::Syntax { file: file.to_owned(), line, column, key, message }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted key of the line holding byte `offset`: the table header above it
/// (`[rocksdb]`; `[[tokens]]` counted as `tokens[N]`, 0-based) and the key before `=` on
/// the line itself. A heuristic over lines — good for the flat files this configuration
/// uses; `None` when nothing sensible can be said.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let mut table: Option<String> = None;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut pos = 0;
    for line in src.split_inclusive('\n') {
        let end = pos + line.len();
        let here = offset < end || end >= src.len();
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            // comment or blank: nothing to learn
        } else if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = Some(name.trim().to_owned());
        } else if here {
            let key = t.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_owned());
            return match (table, key) {
                (Some(t), Some(k)) => Some(format!("{t}.{k}")),
                (t, k) => k.or(t),
            };
        }
        if here {
            return table;
        }
        pos = end;
    }
    table
}

/// Every key the file may hold, dotted (`tokens[]` for the entries); for documentation
/// tests.
#[cfg(test)]
const ALL_KEYS: &[&str] = &[
    "listen",
    "db",
    "pmh_id_secret",
    "consent_ttl",
    "tokens[].name",
    "tokens[].role",
    "tokens[].token",
    "tokens[].token_sha256",
    "tokens[].municipality",
    "tokens[].insurer_numbers",
    "rocksdb.block_cache_mib",
    "rocksdb.row_cache_mib",
    "rocksdb.block_size",
    "rocksdb.bloom_bits_per_key",
    "rocksdb.data_block_hash_ratio",
    "rocksdb.cache_index_and_filter_blocks",
    "rocksdb.optimize_filters_for_hits",
    "rocksdb.mmap_reads",
    "rocksdb.memtable_bloom_ratio",
    "rocksdb.write_buffer_mib",
    "rocksdb.max_background_jobs",
    "rocksdb.compression",
    "rocksdb.max_open_files",
    "rocksdb.block_restart_interval",
    "rocksdb.cache",
    "rocksdb.index",
    "rocksdb.hash_index_prefix_len",
    "rocksdb.background_priority",
    "store.sync_writes",
    "store.access_log_queue",
    "limits.max_body_bytes",
    "limits.request_timeout",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GW_HASH: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    /// The example of design §6, verbatim except for its two placeholders: `"hex..."`
    /// stands for a SHA-256, and `88131013` has a wrong check digit (the valid number for
    /// 法別 88, Tokyo, 101 is `88131016`).
    fn design_example() -> String {
        DESIGN_EXAMPLE_VERBATIM.replace("\"hex...\"", &format!("\"{GW_HASH}\"")).replace("88131013", "88131016")
    }

    const DESIGN_EXAMPLE_VERBATIM: &str = r#"listen = "127.0.0.1:8080"
db = "var/store"
pmh_id_secret = "change-me"          # keyed hash of the My Number
consent_ttl = "end-of-day"           # or a duration such as "24h"

[[tokens]]
role = "municipality"                # municipality | gateway | admin
token_sha256 = "hex..."              # or `token = "plain"` for local use (warned)
municipality = "131016"
insurer_numbers = ["88131013"]       # the 公費負担者番号 it may write

[[tokens]]
role = "gateway"
token = "gw-secret"
"#;

    fn err(src: &str) -> String {
        match Config::from_toml_str(src, "test.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_design_example_parses() {
        let c = Config::from_toml_str(&design_example(), "pmh.toml").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.db, PathBuf::from("var/store"));
        assert_eq!(c.consent_ttl, ConsentLifetime::EndOfDay);
        assert!(c.has_secret());
        assert_eq!(c.tokens.len(), 2);
        let m = &c.tokens[0];
        assert_eq!((m.role, m.name.as_str()), (Role::Municipality, "municipality-0"));
        assert_eq!(m.municipality, Some(MunicipalityCode::parse("131016").unwrap()));
        assert_eq!(m.insurer_numbers, vec![InsurerNumber::parse("88131016").unwrap()]);
        assert!(m.may_write(InsurerNumber::parse("88131016").unwrap()));
        assert!(!m.may_write(InsurerNumber::parse(&make::insurer_number(89, 13, 101)).unwrap()));
        let g = &c.tokens[1];
        assert_eq!((g.role, g.name.as_str(), g.municipality), (Role::Gateway, "gateway-1", None));
        assert!(g.insurer_numbers.is_empty());
        // The placeholder secret and the plain token are both warned about.
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("change-me"));
        assert!(c.warnings[1].contains("tokens[1] (gateway-1)"));
        // The plain token authenticates.
        assert_eq!(c.authenticate("gw-secret").map(|t| t.name.as_str()), Some("gateway-1"));
    }

    #[test]
    fn the_verbatim_design_example_is_refused_for_its_placeholders() {
        assert_eq!(
            err(DESIGN_EXAMPLE_VERBATIM),
            "test.toml: tokens[0].token_sha256: must be 64 hexadecimal characters (the SHA-256 of the token)"
        );
        let only_digit = DESIGN_EXAMPLE_VERBATIM.replace("\"hex...\"", &format!("\"{GW_HASH}\""));
        assert_eq!(
            err(&only_digit),
            "test.toml: tokens[0].insurer_numbers[0]: medicalSubsidyInsurerNumber: check digit"
        );
    }

    #[test]
    fn an_empty_file_gives_the_engine_defaults() {
        let c = Config::from_toml_str("", "empty.toml").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.db, PathBuf::from(DEFAULT_DB));
        assert!(!c.has_secret());
        assert!(c.tokens.is_empty() && c.warnings.is_empty());
        let sc = c.store_config();
        let d = StoreConfig::default();
        assert_eq!(format!("{:?}", sc.rocks), format!("{:?}", d.rocks));
        assert_eq!(sc.consent_lifetime, d.consent_lifetime);
        assert_eq!((sc.sync_writes, sc.access_log_queue), (d.sync_writes, d.access_log_queue));
        assert_eq!(sc.secret_fingerprint, None);
        assert_eq!(c.limits, Limits { max_body_bytes: 64 << 20, request_timeout: Duration::from_secs(30) });
    }

    #[test]
    fn a_row_cache_of_zero_is_off_not_an_error() {
        let c = Config::from_toml_str("[rocksdb]\nrow_cache_mib = 0\n", "zero.toml").expect("0 turns it off");
        assert_eq!(c.store_config().rocks.row_cache_bytes, 0);
        let c = Config::from_toml_str("[rocksdb]\nrow_cache_mib = 1\n", "one.toml").expect("1 MiB");
        assert_eq!(c.store_config().rocks.row_cache_bytes, 1 << 20);
    }

    #[test]
    fn every_section_maps_onto_the_engine() {
        let c = Config::from_toml_str(
            r#"
consent_ttl = "24h"
pmh_id_secret = "s3cret-for-tests"
[rocksdb]
block_cache_mib = 256
row_cache_mib = 64
block_size = 8192
bloom_bits_per_key = 12
data_block_hash_ratio = 0
cache_index_and_filter_blocks = true
optimize_filters_for_hits = true
mmap_reads = false
memtable_bloom_ratio = 0.05
write_buffer_mib = 32
max_background_jobs = 4
compression = "lz4"
max_open_files = 5000
block_restart_interval = 16
cache = "lru"
index = "hash"
hash_index_prefix_len = 12
background_priority = "normal"
[store]
sync_writes = false
access_log_queue = 1024
[limits]
max_body_bytes = 1048576
request_timeout = "1500ms"
"#,
            "full.toml",
        )
        .unwrap();
        let sc = c.store_config();
        let r = &sc.rocks;
        assert_eq!(r.block_cache_bytes, 256 << 20);
        assert_eq!(r.row_cache_bytes, 64 << 20);
        assert_eq!(c.offline_store_config().rocks.row_cache_bytes, 0);
        assert_eq!(r.block_size, 8192);
        assert_eq!(r.bloom_bits_per_key, 12.0);
        assert_eq!(r.data_block_hash_ratio, None);
        assert!(r.cache_index_and_filter_blocks && r.optimize_filters_for_hits);
        assert!(!r.mmap_reads);
        assert!(Config::from_toml_str("", "empty.toml").unwrap().store_config().rocks.mmap_reads);
        assert!(!Config::from_toml_str("", "empty.toml").unwrap().offline_store_config().rocks.mmap_reads);
        assert!(Config::from_toml_str("", "empty.toml").unwrap().load_store_config().rocks.mmap_reads);
        assert!(!c.load_store_config().rocks.mmap_reads, "a load follows `mmap_reads = false`");
        assert_eq!(c.load_store_config().rocks.row_cache_bytes, 0);
        assert_eq!(r.memtable_bloom_ratio, 0.05);
        assert_eq!(r.write_buffer_bytes, 32 << 20);
        assert_eq!((r.max_background_jobs, r.max_open_files, r.block_restart_interval), (4, 5000, 16));
        assert_eq!(r.compression, Compression::Lz4);
        assert_eq!(r.cache, CacheKind::Lru);
        assert_eq!(r.index, IndexKind::Hash { prefix_len: 12 });
        assert_eq!(r.background_priority, BackgroundPriority::Normal);
        assert_eq!(sc.consent_lifetime, ConsentLifetime::Seconds(86_400));
        assert_eq!((sc.sync_writes, sc.access_log_queue), (false, 1024));
        assert_eq!(sc.secret_fingerprint, Some(PmhIdDeriver::new(b"s3cret-for-tests").fingerprint()));
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert_eq!(c.limits.request_timeout, Duration::from_millis(1500));
        let h = Config::from_toml_str("[rocksdb]\nindex = \"hash\"\n", "t").unwrap();
        assert_eq!(h.rocksdb.index, IndexKind::Hash { prefix_len: DEFAULT_HASH_INDEX_PREFIX_LEN });
    }

    #[test]
    fn every_documented_key_is_accepted_and_documented() {
        let doc = include_str!("../../docs/configuration.md");
        for k in ALL_KEYS {
            let leaf = k.rsplit('.').next().unwrap_or(k);
            assert!(doc.contains(&format!("`{leaf}`")), "docs/configuration.md does not document {k}");
        }
        for var in [ENV_LISTEN, ENV_DB, ENV_PMH_ID_SECRET, ENV_CONSENT_TTL] {
            assert!(doc.contains(var), "docs/configuration.md does not document {var}");
        }
        // The full example of the documentation is a valid configuration.
        let example = doc.find("## Full example").expect("a full example");
        let start = example + doc[example..].find("```toml\n").expect("a toml block") + "```toml\n".len();
        let len = doc[start..].find("```").expect("end of example");
        let c = Config::from_toml_str(&doc[start..start + len], "docs/configuration.md").unwrap();
        assert_eq!(c.tokens.len(), 3);
    }

    #[test]
    fn bad_roles_and_misplaced_token_fields_are_refused() {
        let gw = format!("[[tokens]]\ntoken_sha256 = \"{GW_HASH}\"\n");
        assert_eq!(
            err(&format!("{gw}role = \"doctor\"\n")),
            "test.toml: tokens[0].role: \"doctor\" is not a role (municipality, gateway or admin)"
        );
        assert_eq!(err(&gw), "test.toml: tokens[0].role: required (municipality, gateway or admin)");
        assert_eq!(
            err(&format!("{gw}role = \"gateway\"\nmunicipality = \"131016\"\n")),
            "test.toml: tokens[0].municipality: allowed only on a municipality token (this one is \"gateway\")"
        );
        assert_eq!(
            err(&format!("{gw}role = \"admin\"\ninsurer_numbers = [\"88131016\"]\n")),
            "test.toml: tokens[0].insurer_numbers: allowed only on a municipality token (this one is \"admin\")"
        );
        assert_eq!(
            err(&format!("{gw}role = \"municipality\"\ninsurer_numbers = [\"88131016\"]\n")),
            "test.toml: tokens[0].municipality: required for a municipality token"
        );
        assert_eq!(
            err(&format!("{gw}role = \"municipality\"\nmunicipality = \"131016\"\n")),
            "test.toml: tokens[0].insurer_numbers: required for a municipality token (the 公費負担者番号 it may write)"
        );
        assert_eq!(
            err(&format!("{gw}role = \"gateway\"\ntoken = \"plain\"\n")),
            "test.toml: tokens[0]: give either `token` or `token_sha256`, not both"
        );
        assert_eq!(
            err("[[tokens]]\nrole = \"gateway\"\n"),
            "test.toml: tokens[0]: `token_sha256` (or `token`) is required"
        );
        assert_eq!(
            err(&format!(
                "{gw}role = \"gateway\"\n[[tokens]]\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
                GW_HASH.to_uppercase()
            )),
            "test.toml: tokens[1]: same token as tokens[0]"
        );
        assert_eq!(
            err(&format!(
                "{gw}role = \"gateway\"\nname = \"x\"\n[[tokens]]\nrole = \"admin\"\ntoken = \"t\"\nname = \"x\"\n"
            )),
            "test.toml: tokens[1].name: \"x\" is already the name of tokens[0]"
        );
        assert_eq!(
            err("[[tokens]]\nrole = \"gateway\"\ntoken_sha256 = \"abc\"\n"),
            "test.toml: tokens[0].token_sha256: must be 64 hexadecimal characters (the SHA-256 of the token)"
        );
    }

    #[test]
    fn bad_check_digits_are_refused() {
        let m = |muni: &str, ins: &str| {
            format!(
                "[[tokens]]\nrole = \"municipality\"\ntoken = \"t\"\nmunicipality = \"{muni}\"\ninsurer_numbers = [\"88131016\", \"{ins}\"]\n"
            )
        };
        assert_eq!(err(&m("131017", "89131015")), "test.toml: tokens[0].municipality: municipalityCode: check digit");
        assert_eq!(err(&m("13101", "89131015")), "test.toml: tokens[0].municipality: municipalityCode: 6 digits");
        let good_89 = make::insurer_number(89, 13, 101);
        assert!(Config::from_toml_str(&m("131016", &good_89), "t").is_ok());
        let bad_89 = format!("{}{}", &good_89[..7], (good_89.as_bytes()[7] - b'0' + 1) % 10);
        assert_eq!(
            err(&m("131016", &bad_89)),
            "test.toml: tokens[0].insurer_numbers[1]: medicalSubsidyInsurerNumber: check digit"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = err("listen = \"127.0.0.1:1\"\nlisten_port = 8080\n");
        assert!(e.starts_with("test.toml: line 2, column 1: listen_port: unknown key `listen_port`"), "{e}");
        let e = err("[rocksdb]\nblock_size = 4096\nblock_cahce_mib = 64\n");
        assert!(e.starts_with("test.toml: line 3, column 1: rocksdb.block_cahce_mib: unknown key"), "{e}");
        let e = err("[[tokens]]\nrole = \"gateway\"\ntoken = \"a\"\n[[tokens]]\nrole = \"admin\"\ntokn = \"b\"\n");
        assert!(e.starts_with("test.toml: line 6, column 1: tokens[1].tokn: unknown key"), "{e}");
        let e = err("[rocksdb]\nblock_size = \"big\"\n");
        assert!(e.starts_with("test.toml: line 2, column 14: rocksdb.block_size: invalid type"), "{e}");
        let e = err("[limitz]\n");
        assert!(e.contains("unknown key `limitz`"), "{e}");
        let e = err("listen = \n");
        assert!(e.starts_with("test.toml: line 1, column"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        assert_eq!(
            err("consent_ttl = \"24y\"\n"),
            "test.toml: consent_ttl: consent lifetime \"24y\": unit must be s, m, h or d"
        );
        assert_eq!(
            err("consent_ttl = \"tomorrow\"\n"),
            "test.toml: consent_ttl: consent lifetime \"tomorrow\": expected \"end-of-day\" or a duration like \"24h\""
        );
        assert_eq!(
            err("[limits]\nrequest_timeout = \"0s\"\n"),
            "test.toml: limits.request_timeout: \"0s\": must be positive"
        );
        assert_eq!(
            err("[limits]\nrequest_timeout = \"30\"\n"),
            "test.toml: limits.request_timeout: \"30\": unit must be ms, s, m or h"
        );
        assert!(
            err("listen = \"localhost\"\n").starts_with("test.toml: listen: \"localhost\" is not a socket address")
        );
        assert_eq!(err("pmh_id_secret = \"\"\n"), "test.toml: pmh_id_secret: must not be empty");
        assert_eq!(
            err("[rocksdb]\ncompression = \"zstd\"\n"),
            "test.toml: rocksdb.compression: \"zstd\": must be \"none\" or \"lz4\""
        );
        assert_eq!(
            err("[rocksdb]\ncache = \"clock\"\n"),
            "test.toml: rocksdb.cache: \"clock\": must be \"hyper-clock\" or \"lru\""
        );
        assert_eq!(
            err("[rocksdb]\nbackground_priority = \"low\"\n"),
            "test.toml: rocksdb.background_priority: \"low\": must be \"idle\" or \"normal\""
        );
        assert_eq!(
            err("[rocksdb]\nindex = \"btree\"\n"),
            "test.toml: rocksdb.index: \"btree\": must be \"binary\" or \"hash\""
        );
        assert_eq!(
            err("[rocksdb]\nhash_index_prefix_len = 8\n"),
            "test.toml: rocksdb.hash_index_prefix_len: only meaningful with index = \"hash\""
        );
        assert_eq!(
            err("[rocksdb]\nrow_cache_mib = 18446744073709551615\n"),
            "test.toml: rocksdb.row_cache_mib: must be 0 (off) or a size in MiB that fits in memory"
        );
        assert_eq!(
            err("[rocksdb]\nblock_cache_mib = 0\n"),
            "test.toml: rocksdb.block_cache_mib: must be at least 1 (MiB) and fit in memory"
        );
        assert_eq!(
            err("[rocksdb]\ndata_block_hash_ratio = 1.5\n"),
            "test.toml: rocksdb.data_block_hash_ratio: must be 0 (off) or in (0, 1]"
        );
        assert_eq!(
            err("[rocksdb]\nmax_open_files = 0\n"),
            "test.toml: rocksdb.max_open_files: must be -1 (keep all open) or positive"
        );
        assert_eq!(
            err("[rocksdb]\nmax_background_jobs = 0\n"),
            "test.toml: rocksdb.max_background_jobs: must be 1..=256"
        );
        assert_eq!(err("[store]\naccess_log_queue = 0\n"), "test.toml: store.access_log_queue: must be at least 1");
        assert_eq!(err("[limits]\nmax_body_bytes = 0\n"), "test.toml: limits.max_body_bytes: must be at least 1");
    }

    #[test]
    fn deriving_needs_a_secret() {
        let c = Config::from_toml_str("", "pmh.toml").unwrap();
        let e = c.deriver().unwrap_err();
        assert_eq!(e, ConfigError::MissingSecret { file: "pmh.toml".into() });
        assert!(e.to_string().starts_with("pmh.toml: pmh_id_secret: not set"), "{e}");
        let c = Config::from_toml_str("pmh_id_secret = \"abc\"\n", "pmh.toml").unwrap();
        let n = pmh_engine::MyNumber::parse("123456789018").unwrap();
        assert_eq!(c.deriver().unwrap().derive(&n), PmhIdDeriver::new(b"abc").derive(&n));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmh.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\ndb = \"from-file\"\npmh_id_secret = \"file\"\n").unwrap();
        let env = |name: &str| match name {
            ENV_LISTEN => Some("0.0.0.0:9000".to_owned()),
            ENV_PMH_ID_SECRET => Some("from-env".to_owned()),
            ENV_CONSENT_TTL => Some("90m".to_owned()),
            _ => None,
        };
        let c = Config::load_with_env(Some(&path), &env).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.db, PathBuf::from("from-file"));
        assert_eq!(c.consent_ttl, ConsentLifetime::Seconds(5400));
        assert_eq!(c.store_config().secret_fingerprint, Some(PmhIdDeriver::new(b"from-env").fingerprint()));
        assert_eq!(c.origin, path.display().to_string());

        // No file: defaults + environment.
        let c = Config::load_with_env(None, &|n| (n == ENV_DB).then(|| "elsewhere".to_owned())).unwrap();
        assert_eq!((c.db, c.origin.as_str()), (PathBuf::from("elsewhere"), "defaults"));
        assert!(Config::load_with_env(None, &no_env).is_ok());

        // A bad value from the environment names the variable.
        let e = Config::load_with_env(Some(&path), &|n| (n == ENV_CONSENT_TTL).then(|| "soon".to_owned())).unwrap_err();
        assert!(e.to_string().starts_with("environment: PMH_CONSENT_TTL: consent lifetime \"soon\""), "{e}");
        let e = Config::load_with_env(None, &|n| (n == ENV_PMH_ID_SECRET).then(String::new)).unwrap_err();
        assert_eq!(e.to_string(), "environment: PMH_PMH_ID_SECRET: must not be empty");
        let e = Config::load_with_env(None, &|n| (n == ENV_LISTEN).then(|| "nowhere".to_owned())).unwrap_err();
        assert!(e.to_string().starts_with("environment: PMH_LISTEN: "), "{e}");
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/pmh.toml")), &no_env).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/pmh.toml: cannot read the configuration: "), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_file_holding_secrets_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmh.toml");
        std::fs::write(&path, "pmh_id_secret = \"abc\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load_with_env(Some(&path), &no_env).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("other users may read it")), "{:?}", c.warnings);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load_with_env(Some(&path), &no_env).unwrap().warnings.is_empty());
    }

    #[test]
    fn debug_never_prints_secrets_or_tokens() {
        let src = format!(
            "pmh_id_secret = \"very-secret-value\"\n[[tokens]]\nrole = \"gateway\"\ntoken = \"plain-token-value\"\n\
             [[tokens]]\nrole = \"admin\"\ntoken_sha256 = \"{GW_HASH}\"\n"
        );
        let c = Config::from_toml_str(&src, "t").unwrap();
        let d = format!("{c:?} {:?} {:#?}", c.tokens[0], c);
        for secret in ["very-secret-value", "plain-token-value", GW_HASH, &hex(&sha256(b"plain-token-value"))] {
            assert!(!d.contains(secret), "{secret} printed in {d}");
        }
        assert!(d.contains("<redacted>"));
        // Neither do the warnings.
        assert!(!c.warnings.concat().contains("plain-token-value"));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn authenticate_compares_digests() {
        let admin_token = "admin-token-123";
        let src = format!(
            "[[tokens]]\nname = \"gw\"\nrole = \"gateway\"\ntoken = \"gw-token\"\n\
             [[tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            hex(&sha256(admin_token.as_bytes())).to_uppercase()
        );
        let c = Config::from_toml_str(&src, "t").unwrap();
        assert_eq!(c.authenticate("gw-token").map(|t| (t.name.as_str(), t.role)), Some(("gw", Role::Gateway)));
        assert_eq!(c.authenticate(admin_token).map(|t| (t.name.as_str(), t.role)), Some(("ops", Role::Admin)));
        for wrong in ["", "gw-token ", "GW-TOKEN", "gw-toke", "admin-token-1234", &hex(&sha256(admin_token.as_bytes()))]
        {
            assert!(c.authenticate(wrong).is_none(), "{wrong:?} authenticated");
        }
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
        let mut other = [7; 32];
        other[31] = 8;
        assert!(!constant_time_eq(&[7; 32], &other));
    }

    #[test]
    fn the_demo_configuration_is_random_valid_and_printable() {
        let db = Path::new("/tmp/pmh demo \"store\"");
        let (c, text) = Config::demo(db).unwrap();
        assert_eq!(c.db, db);
        assert!(c.has_secret() && c.warnings.is_empty());
        let roles: Vec<Role> = c.tokens.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::Gateway, Role::Admin, Role::Municipality]);
        assert_eq!(c.tokens[2].municipality, Some(MunicipalityCode::parse("131016").unwrap()));
        assert_eq!(c.tokens[2].insurer_numbers.len(), 5);
        // The printed text is the same configuration, and its tokens authenticate.
        let again = Config::from_toml_str(&text, "saved.toml").unwrap();
        assert_eq!(again.db, db);
        assert_eq!(again.store_config().secret_fingerprint, c.store_config().secret_fingerprint);
        for (t, role) in text.lines().filter_map(|l| l.strip_prefix("token = \"")).zip(roles) {
            let plain = t.trim_end_matches('"');
            assert_eq!(plain.len(), 64);
            assert_eq!(c.authenticate(plain).map(|t| t.role), Some(role));
        }
        // Fresh every time.
        let (c2, text2) = Config::demo(db).unwrap();
        assert_ne!(text, text2);
        assert_ne!(c.store_config().secret_fingerprint, c2.store_config().secret_fingerprint);
    }

    #[test]
    fn parse_sha256_accepts_both_cases_only_hex() {
        assert_eq!(parse_sha256(GW_HASH), parse_sha256(&GW_HASH.to_uppercase()));
        assert!(parse_sha256(&"g".repeat(64)).is_none());
        assert!(parse_sha256(&"a".repeat(63)).is_none());
        assert!(parse_sha256(&"é".repeat(32)).is_none());
    }
}
