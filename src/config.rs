//! Configuration from environment variables, read and validated once at start.
//!
//! Every variable is listed in the README's configuration table; keep the two in step.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// Whether the process serves real users. Production refuses unsafe defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret value that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Caps applied to every GraphQL request, whatever its transport.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_batch_size: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Connections page size cap (`first`/`last`).
    pub max_page_size: usize,
}

/// Throttling of failed logins: a burst, then one attempt per refill interval.
#[derive(Clone, Debug)]
pub struct LoginThrottle {
    pub per_account_burst: u32,
    pub per_account_refill: Duration,
    pub per_ip_burst: u32,
    pub per_ip_refill: Duration,
}

/// Request rate limits (GCRA), per minute; 0 turns one off. See the README table.
#[derive(Clone, Debug)]
pub struct RateLimits {
    /// False when `RATE_LIMIT_PER_MINUTE=0`: every limit below is off (load tests).
    pub enabled: bool,
    pub basic: u32,
    pub standard: u32,
    pub pro: u32,
    /// The tier of accounts that have none set.
    pub default_tier: crate::ratelimit::Tier,
    /// Anonymous requests, per client IP.
    pub anonymous: u32,
    /// Order placement and amendment, per user.
    pub orders: u32,
    /// Sign-in attempts, per client IP.
    pub login: u32,
}

impl RateLimits {
    pub fn for_tier(&self, tier: crate::ratelimit::Tier) -> u32 {
        match tier {
            crate::ratelimit::Tier::Basic => self.basic,
            crate::ratelimit::Tier::Standard => self.standard,
            crate::ratelimit::Tier::Pro => self.pro,
        }
    }
}

/// API keys: the server key signing keys' secrets are derived from, and caps.
#[derive(Clone, Debug)]
pub struct ApiKeySettings {
    /// `API_KEY_SECRET`, or one derived from `JWT_SECRET` when unset.
    pub signing_secret: Secret,
    /// Keys (revoked ones excluded) one user may hold.
    pub max_per_user: u64,
}

/// A 256-bit key that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Key256([u8; 32]);

impl Key256 {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256(***)")
    }
}

/// KYC, screening and transaction monitoring.
#[derive(Clone, Debug)]
pub struct KycConfig {
    pub tier_limits: crate::domain::kyc::TierLimitTable,
    /// Encrypts applicants' personal data at rest (AES-256-GCM).
    pub encryption_key: Key256,
    /// True when no `KYC_ENCRYPTION_KEY` was given and the development key is in use.
    pub encryption_key_is_development: bool,
    pub webhook_secret: Secret,
    pub webhook_tolerance: Duration,
    pub upload_dir: std::path::PathBuf,
    pub max_upload_bytes: usize,
    pub max_upload_files: usize,
    pub sanctions_list_path: std::path::PathBuf,
    /// Jaro-Winkler score (0..1) at or above which a name matches a list entry.
    pub match_threshold: f64,
    /// ISO 3166-1 alpha-2 codes that cannot pass BASIC.
    pub blocked_countries: Vec<String>,
    pub monitoring: crate::domain::monitoring::Rules,
}

/// Used only outside production, so stored development data stays readable across
/// restarts; production refuses to start without its own key.
const DEVELOPMENT_KYC_KEY: &str = "tradegraph development KYC key: never use in production";
const DEVELOPMENT_WEBHOOK_SECRET: &str = "tradegraph-development-kyc-webhook-secret";

#[derive(Clone, Debug)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: Option<String>,
    /// The Redis channel replicas exchange events on (replicas of one deployment share it).
    pub redis_channel: String,
    pub app_env: AppEnv,
    pub jwt_secret: Secret,
    /// True when no `JWT_SECRET` was given and one was generated for this process.
    pub jwt_secret_generated: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub admin: Option<(String, Secret)>,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub limits: QueryLimits,
    pub enable_introspection: bool,
    pub trust_proxy_headers: bool,
    pub login_throttle: LoginThrottle,
    pub shutdown_timeout: Duration,
    pub ws_init_timeout: Duration,
    pub ws_max_subscriptions: usize,
    /// Messages queued for one WebSocket before its subscriptions wait (and then fall
    /// behind on the bus without holding anyone else up).
    pub ws_outbox_capacity: usize,
    /// A market's ticker is pushed at most once per interval (the latest value).
    pub ticker_interval: Duration,
    /// How long one write to a WebSocket may wait for the peer to take it before the
    /// connection is cut, so a client that stops reading cannot pin memory.
    pub ws_write_timeout: Duration,
    /// Seed demo assets and markets into an empty database.
    pub seed_demo_data: bool,
    /// Run the demo bot (`serve --demo` or `DEMO_BOT=true`).
    pub demo_bot: bool,
    /// How often the demo bot requotes every market.
    pub demo_bot_interval: std::time::Duration,
    /// `PNL_FOLLOWER`: whether this replica folds committed trades into P&L state in
    /// the background. Without it, P&L state still catches up whenever it is read and
    /// before deposits and withdrawals, and any replica with it sweeps up the rest.
    pub pnl_follower: bool,
    /// `RATE_LIMIT_PER_MINUTE`: the Standard tier's default; 0 disables every limit.
    pub rate_limit_per_minute: u32,
    /// Fee discounts by 30-day traded volume (in each market's quote asset).
    pub fee_tiers: Vec<crate::domain::fees::FeeTier>,
    /// Limits per user, API key and IP, by tier, plus orders and sign-ins.
    pub rate_limits: RateLimits,
    /// API key secrets and caps.
    pub api_keys: ApiKeySettings,
    /// Prefix of every Redis key this deployment writes (rate limits, replay cache).
    pub redis_key_prefix: String,
    /// Second factors, withdrawals, e-mail and password resets.
    pub security: SecurityConfig,
    /// The content compliance rules file; `None`: `config/compliance_rules.toml` when it
    /// exists, else the copy built into the binary.
    pub compliance_rules_path: Option<std::path::PathBuf>,
    /// KYC tiers and limits, applications, the provider webhook, screening, monitoring.
    pub kyc: KycConfig,
}

/// Second factors, withdrawals, e-mail and password resets.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// The WebAuthn relying party id: the site's domain, without scheme or port.
    pub webauthn_rp_id: String,
    /// The exact origin browsers sign passkey ceremonies for.
    pub webauthn_rp_origin: String,
    /// The name authenticators show.
    pub webauthn_rp_name: String,
    /// How long a started passkey ceremony may be finished.
    pub webauthn_challenge_ttl: Duration,
    /// Seals TOTP secrets at rest (`TOTP_ENCRYPTION_KEY`, else derived from `JWT_SECRET`).
    pub totp_key: Secret,
    /// Wrong second-factor codes per account: a burst, then one per refill interval.
    pub second_factor_burst: u32,
    pub second_factor_refill: Duration,
    pub withdrawal_address_cooling_off: Duration,
    pub withdrawal_lock_after_security_change: Duration,
    /// Where e-mail goes (`smtp://`, `smtps://`); without it e-mails are only logged.
    pub smtp_url: Option<Secret>,
    pub email_from: String,
    pub password_reset_ttl: Duration,
}

impl SecurityConfig {
    fn from_env(env: &Env, jwt_secret: &Secret) -> anyhow::Result<Self> {
        let totp_key = match env.get("TOTP_ENCRYPTION_KEY") {
            Some(key) if key.len() < 32 => {
                bail!("TOTP_ENCRYPTION_KEY must be at least 32 characters long")
            }
            Some(key) => Secret::new(key),
            None => Secret::new(format!("totp-seal:{}", jwt_secret.expose())),
        };
        let rp_origin = env
            .get("WEBAUTHN_RP_ORIGIN")
            .unwrap_or_else(|| "http://localhost:8000".to_owned());
        let rp_id = env
            .get("WEBAUTHN_RP_ID")
            .unwrap_or_else(|| "localhost".to_owned());
        if !rp_origin.starts_with("https://") && !rp_origin.starts_with("http://localhost") {
            bail!("WEBAUTHN_RP_ORIGIN must be https:// (or http://localhost for development)");
        }
        Ok(SecurityConfig {
            webauthn_rp_id: rp_id,
            webauthn_rp_origin: rp_origin,
            webauthn_rp_name: env
                .get("WEBAUTHN_RP_NAME")
                .unwrap_or_else(|| "tradegraph".to_owned()),
            webauthn_challenge_ttl: env.seconds("WEBAUTHN_CHALLENGE_TTL_SECS", 300)?,
            totp_key,
            second_factor_burst: env.parse("SECOND_FACTOR_FAILURES_PER_ACCOUNT", "5")?,
            second_factor_refill: env.seconds("SECOND_FACTOR_REFILL_SECS", 60)?,
            withdrawal_address_cooling_off: env
                .seconds("WITHDRAWAL_ADDRESS_COOLING_OFF_SECS", 48 * 3600)?,
            withdrawal_lock_after_security_change: env
                .seconds("WITHDRAWAL_LOCK_AFTER_SECURITY_CHANGE_SECS", 24 * 3600)?,
            smtp_url: env
                .get("SMTP_URL")
                .filter(|url| !url.trim().is_empty())
                .map(Secret::new),
            email_from: env
                .get("EMAIL_FROM")
                .unwrap_or_else(|| "tradegraph <no-reply@localhost>".to_owned()),
            password_reset_ttl: env.seconds("PASSWORD_RESET_TTL_SECS", 3600)?,
        })
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads configuration from the given variables, so tests can build one without
    /// touching the process environment.
    pub fn from_vars(vars: HashMap<String, String>) -> anyhow::Result<Self> {
        let env = Env(vars);
        let app_env = match env.get("APP_ENV").as_deref().unwrap_or("development") {
            "development" | "dev" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => bail!("APP_ENV must be `development` or `production`, not `{other}`"),
        };
        let (jwt_secret, jwt_secret_generated) = match env.get("JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                bail!("JWT_SECRET must be at least 32 characters long")
            }
            Some(secret) => (Secret::new(secret), false),
            None if app_env == AppEnv::Production => bail!(
                "JWT_SECRET is required when APP_ENV=production: set it to a random string of \
                 at least 32 characters, the same on every replica"
            ),
            None => (Secret::new(crate::auth::tokens::random_token(48)), true),
        };
        let admin = match (env.get("ADMIN_EMAIL"), env.get("ADMIN_PASSWORD")) {
            (Some(email), Some(password)) => Some((email, Secret::new(password))),
            (None, None) => None,
            _ => bail!("ADMIN_EMAIL and ADMIN_PASSWORD must be set together"),
        };
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            None => match app_env {
                AppEnv::Production => LogFormat::Json,
                AppEnv::Development => LogFormat::Text,
            },
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("LOG_FORMAT must be `text` or `json`, not `{other}`"),
        };
        let cors_origins = env
            .get("CORS_ORIGINS")
            .map(|origins| {
                origins
                    .split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let redis_url = env.get("REDIS_URL").filter(|url| !url.trim().is_empty());
        let redis_channel = env
            .get("REDIS_EVENTS_CHANNEL")
            .unwrap_or_else(|| "tradegraph:events".to_owned());
        let rate_limit_per_minute: u32 = env.parse("RATE_LIMIT_PER_MINUTE", "300")?;
        let standard: u32 = env.parse(
            "RATE_LIMIT_STANDARD_PER_MINUTE",
            &rate_limit_per_minute.to_string(),
        )?;
        let rate_limits = RateLimits {
            enabled: rate_limit_per_minute > 0,
            basic: env.parse("RATE_LIMIT_BASIC_PER_MINUTE", "100")?,
            standard,
            pro: env.parse("RATE_LIMIT_PRO_PER_MINUTE", "1000")?,
            default_tier: env.parse("RATE_LIMIT_DEFAULT_TIER", "STANDARD")?,
            anonymous: env.parse("RATE_LIMIT_ANONYMOUS_PER_MINUTE", &standard.to_string())?,
            orders: env.parse("RATE_LIMIT_ORDERS_PER_MINUTE", "120")?,
            login: env.parse("RATE_LIMIT_LOGIN_PER_MINUTE", "30")?,
        };
        let api_key_secret = match env.get("API_KEY_SECRET") {
            Some(secret) if secret.len() < 32 => {
                bail!("API_KEY_SECRET must be at least 32 characters long")
            }
            Some(secret) => Secret::new(secret),
            // Domain-separated from the JWT key, so neither can stand in for the other.
            None => Secret::new(crate::auth::api_keys::sign(
                jwt_secret.expose(),
                b"tradegraph api-key server secret",
            )),
        };
        let security = SecurityConfig::from_env(&env, &jwt_secret)?;
        let kyc = kyc_config(&env, app_env)?;

        Ok(Config {
            bind_addr: env.parse("BIND_ADDR", "127.0.0.1:8000")?,
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://tradegraph.db?mode=rwc".to_owned()),
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", "16")?,
            redis_url,
            redis_key_prefix: env
                .get("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| format!("{redis_channel}:")),
            redis_channel,
            app_env,
            jwt_secret,
            jwt_secret_generated,
            access_token_ttl: env.seconds("ACCESS_TOKEN_TTL_SECS", 900)?,
            refresh_token_ttl: env.seconds("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            admin,
            log_format,
            cors_origins,
            limits: QueryLimits {
                max_depth: env.parse("MAX_QUERY_DEPTH", "12")?,
                max_complexity: env.parse("MAX_QUERY_COMPLEXITY", "1000")?,
                max_aliases: env.parse("MAX_QUERY_ALIASES", "30")?,
                max_root_fields: env.parse("MAX_ROOT_FIELDS", "20")?,
                max_batch_size: env.parse("MAX_BATCH_SIZE", "10")?,
                max_body_bytes: env.parse("MAX_BODY_BYTES", "1048576")?,
                request_timeout: env.seconds("REQUEST_TIMEOUT_SECS", 30)?,
                max_page_size: 200,
            },
            enable_introspection: env.parse::<bool>("ENABLE_INTROSPECTION", "false")?
                || app_env == AppEnv::Development,
            trust_proxy_headers: env.parse("TRUST_PROXY_HEADERS", "false")?,
            login_throttle: LoginThrottle {
                per_account_burst: env.parse("LOGIN_FAILURES_PER_ACCOUNT", "5")?,
                per_account_refill: env.seconds("LOGIN_ACCOUNT_REFILL_SECS", 180)?,
                per_ip_burst: env.parse("LOGIN_FAILURES_PER_IP", "20")?,
                per_ip_refill: env.seconds("LOGIN_IP_REFILL_SECS", 30)?,
            },
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 10)?,
            ws_init_timeout: env.seconds("WS_INIT_TIMEOUT_SECS", 10)?,
            ws_max_subscriptions: env.parse("WS_MAX_SUBSCRIPTIONS", "50")?,
            ws_outbox_capacity: env.parse("WS_OUTBOX_CAPACITY", "256")?,
            ws_write_timeout: env.millis("WS_WRITE_TIMEOUT_MS", 30_000)?,
            ticker_interval: env.millis("TICKER_INTERVAL_MS", 250)?,
            rate_limit_per_minute,
            rate_limits,
            api_keys: ApiKeySettings {
                signing_secret: api_key_secret,
                max_per_user: env.parse("API_KEYS_PER_USER", "20")?,
            },
            compliance_rules_path: env
                .get("COMPLIANCE_RULES_PATH")
                .filter(|p| !p.trim().is_empty())
                .map(std::path::PathBuf::from),
            fee_tiers: crate::domain::fees::parse_tiers(
                &env.get("FEE_TIERS")
                    .unwrap_or_else(|| "100000:10,1000000:25,10000000:50".to_owned()),
            )
            .map_err(|e| anyhow!("FEE_TIERS is not valid: {e}"))?,
            security,
            demo_bot: env.parse("DEMO_BOT", "false")?,
            pnl_follower: env.parse("PNL_FOLLOWER", "true")?,
            demo_bot_interval: std::time::Duration::from_millis(
                env.parse("DEMO_BOT_INTERVAL_MS", "1000")?,
            ),
            kyc,
            seed_demo_data: env.parse(
                "SEED_DEMO_DATA",
                if app_env == AppEnv::Development {
                    "true"
                } else {
                    "false"
                },
            )?,
        })
        .and_then(Config::validated)
    }

    fn validated(self) -> anyhow::Result<Self> {
        let l = &self.limits;
        for (name, value) in [
            ("MAX_QUERY_DEPTH", l.max_depth),
            ("MAX_QUERY_COMPLEXITY", l.max_complexity),
            ("MAX_BATCH_SIZE", l.max_batch_size),
            ("MAX_BODY_BYTES", l.max_body_bytes),
            ("WS_OUTBOX_CAPACITY", self.ws_outbox_capacity),
        ] {
            if value == 0 {
                bail!("{name} must be greater than zero");
            }
        }
        if self.ws_write_timeout.is_zero() {
            bail!("WS_WRITE_TIMEOUT_MS must be greater than zero");
        }
        if self.access_token_ttl.is_zero() || self.refresh_token_ttl <= self.access_token_ttl {
            bail!("REFRESH_TOKEN_TTL_SECS must be longer than ACCESS_TOKEN_TTL_SECS (> 0)");
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            bail!("DATABASE_URL must start with sqlite:, postgres:// or postgresql://");
        }
        Ok(self)
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }
}

fn kyc_config(env: &Env, app_env: AppEnv) -> anyhow::Result<KycConfig> {
    use sha2::Digest;
    let production = app_env == AppEnv::Production;
    let (encryption_key, encryption_key_is_development) = match env.get("KYC_ENCRYPTION_KEY") {
        Some(hex_key) => {
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow!("KYC_ENCRYPTION_KEY must be 64 hex digits (32 bytes)"))?;
            (Key256(bytes), false)
        }
        None if production => bail!(
            "KYC_ENCRYPTION_KEY is required when APP_ENV=production: 64 hex digits \
             (e.g. `openssl rand -hex 32`), the same on every replica, kept safe: without it \
             stored personal data cannot be read"
        ),
        None => (
            Key256(sha2::Sha256::digest(DEVELOPMENT_KYC_KEY.as_bytes()).into()),
            true,
        ),
    };
    let webhook_secret = match env.get("KYC_WEBHOOK_SECRET") {
        Some(secret) if secret.len() < 16 => {
            bail!("KYC_WEBHOOK_SECRET must be at least 16 characters long")
        }
        Some(secret) => Secret::new(secret),
        None if production => {
            bail!("KYC_WEBHOOK_SECRET is required when APP_ENV=production (from the KYC provider)")
        }
        None => Secret::new(DEVELOPMENT_WEBHOOK_SECRET),
    };
    let sanctions_list_path = match env.get("SANCTIONS_LIST_PATH") {
        Some(path) => std::path::PathBuf::from(path),
        None if production => bail!(
            "SANCTIONS_LIST_PATH is required when APP_ENV=production: the shipped list is a \
             sample of invented names"
        ),
        None => std::path::PathBuf::from("config/sanctions_sample.csv"),
    };
    if production && !sanctions_list_path.is_file() {
        bail!("SANCTIONS_LIST_PATH does not name a readable file");
    }
    let match_threshold: f64 = env.parse("SANCTIONS_MATCH_THRESHOLD", "0.93")?;
    if !(0.5..=1.0).contains(&match_threshold) {
        bail!("SANCTIONS_MATCH_THRESHOLD must be between 0.5 and 1");
    }
    let mut blocked_countries = Vec::new();
    for code in env
        .get("KYC_BLOCKED_COUNTRIES")
        .unwrap_or_else(|| "KP,IR".to_owned())
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        blocked_countries.push(crate::domain::kyc::country_code(code).ok_or_else(|| {
            anyhow!("KYC_BLOCKED_COUNTRIES: `{code}` is not a two-letter country code")
        })?);
    }
    let decimal = |name: &str, default: &str| -> anyhow::Result<rust_decimal::Decimal> {
        let raw = env.get(name).unwrap_or_else(|| default.to_owned());
        rust_decimal::Decimal::from_str_exact(raw.trim())
            .ok()
            .filter(|d| d.is_sign_positive() && !d.is_zero())
            .ok_or_else(|| anyhow!("{name}=`{raw}` must be a positive decimal"))
    };
    let monitoring = crate::domain::monitoring::Rules {
        large_usd: decimal("MONITOR_LARGE_USD", "10000")?,
        rapid_window: chrono::Duration::hours(env.parse("MONITOR_RAPID_WINDOW_HOURS", "24")?),
        rapid_fraction: decimal("MONITOR_RAPID_FRACTION", "0.8")?,
        structuring_band: decimal("MONITOR_STRUCTURING_BAND", "0.1")?,
        structuring_count: env.parse("MONITOR_STRUCTURING_COUNT", "3")?,
        structuring_window: chrono::Duration::days(
            env.parse("MONITOR_STRUCTURING_WINDOW_DAYS", "7")?,
        ),
    };
    if monitoring.structuring_band >= rust_decimal::Decimal::ONE || monitoring.structuring_count < 2
    {
        bail!("MONITOR_STRUCTURING_BAND must be below 1 and MONITOR_STRUCTURING_COUNT at least 2");
    }
    let config = KycConfig {
        tier_limits: crate::domain::kyc::TierLimitTable::parse(
            &env.get("KYC_TIER_LIMITS")
                .unwrap_or_else(|| crate::domain::kyc::DEFAULT_TIER_LIMITS.to_owned()),
        )
        .map_err(|e| anyhow!("KYC_TIER_LIMITS is not valid: {e}"))?,
        encryption_key,
        encryption_key_is_development,
        webhook_secret,
        webhook_tolerance: env.seconds("KYC_WEBHOOK_TOLERANCE_SECS", 300)?,
        upload_dir: std::path::PathBuf::from(
            env.get("KYC_UPLOAD_DIR")
                .unwrap_or_else(|| "data/kyc-documents".to_owned()),
        ),
        max_upload_bytes: env.parse("KYC_MAX_UPLOAD_BYTES", "5242880")?,
        max_upload_files: env.parse("KYC_MAX_UPLOAD_FILES", "5")?,
        sanctions_list_path,
        match_threshold,
        blocked_countries,
        monitoring,
    };
    if config.max_upload_bytes == 0 || config.max_upload_files == 0 {
        bail!("KYC_MAX_UPLOAD_BYTES and KYC_MAX_UPLOAD_FILES must be greater than zero");
    }
    Ok(config)
}

struct Env(HashMap<String, String>);

impl Env {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn parse<T>(&self, name: &str, default: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.get(name).unwrap_or_else(|| default.to_owned());
        raw.trim()
            .parse()
            .map_err(|e| anyhow!("{name}=`{raw}` is not valid: {e}"))
    }

    fn seconds(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        self.parse::<u64>(name, &default.to_string())
            .map(Duration::from_secs)
            .with_context(|| format!("{name} is a whole number of seconds"))
    }

    fn millis(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        self.parse::<u64>(name, &default.to_string())
            .map(Duration::from_millis)
            .with_context(|| format!("{name} is a whole number of milliseconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_defaults_generate_a_secret() {
        let config = Config::from_vars(vars(&[])).expect("defaults are valid");
        assert!(config.jwt_secret_generated);
        assert!(config.jwt_secret.expose().len() >= 32);
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.database_url, "sqlite://tradegraph.db?mode=rwc");
        assert!(config.enable_introspection);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn production_requires_a_jwt_secret() {
        let err = Config::from_vars(vars(&[("APP_ENV", "production")])).expect_err("must fail");
        assert!(err.to_string().contains("JWT_SECRET is required"), "{err}");
    }

    #[test]
    fn production_hides_introspection_unless_enabled() {
        let secret = "x".repeat(40);
        let key = "ab".repeat(32);
        let base = [
            ("APP_ENV", "production"),
            ("JWT_SECRET", secret.as_str()),
            ("KYC_ENCRYPTION_KEY", key.as_str()),
            ("KYC_WEBHOOK_SECRET", secret.as_str()),
            ("SANCTIONS_LIST_PATH", "config/sanctions_sample.csv"),
        ];
        let config = Config::from_vars(vars(&base)).expect("valid");
        assert!(!config.enable_introspection);
        assert_eq!(config.log_format, LogFormat::Json);
        let mut with = base.to_vec();
        with.push(("ENABLE_INTROSPECTION", "true"));
        assert!(
            Config::from_vars(vars(&with))
                .expect("valid")
                .enable_introspection
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("BIND_ADDR", "nowhere"),
            ("MAX_QUERY_DEPTH", "-1"),
            ("APP_ENV", "staging"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_URL", "mysql://x"),
            ("JWT_SECRET", "short"),
            ("WS_OUTBOX_CAPACITY", "0"),
            ("WS_WRITE_TIMEOUT_MS", "0"),
            ("WS_WRITE_TIMEOUT_MS", "soon"),
        ] {
            let err = Config::from_vars(vars(&[(name, value)])).expect_err("must fail");
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
    }

    #[test]
    fn production_requires_kyc_secrets() {
        let secret = "x".repeat(40);
        let key = "ab".repeat(32);
        let full = [
            ("APP_ENV", "production"),
            ("JWT_SECRET", secret.as_str()),
            ("KYC_ENCRYPTION_KEY", key.as_str()),
            ("KYC_WEBHOOK_SECRET", secret.as_str()),
            ("SANCTIONS_LIST_PATH", "config/sanctions_sample.csv"),
        ];
        let config = Config::from_vars(vars(&full)).expect("valid");
        assert!(!config.kyc.encryption_key_is_development);
        for missing in [
            "KYC_ENCRYPTION_KEY",
            "KYC_WEBHOOK_SECRET",
            "SANCTIONS_LIST_PATH",
        ] {
            let without: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = Config::from_vars(vars(&without)).expect_err("must fail");
            assert!(err.to_string().contains(missing), "{err}");
        }
        let dev = Config::from_vars(vars(&[])).expect("valid");
        assert!(dev.kyc.encryption_key_is_development);
        for (name, value) in [
            ("KYC_ENCRYPTION_KEY", "abcd"),
            ("KYC_TIER_LIMITS", "BASIC:trade:1:1"),
            ("KYC_BLOCKED_COUNTRIES", "North Korea"),
            ("SANCTIONS_MATCH_THRESHOLD", "2"),
            ("MONITOR_LARGE_USD", "-5"),
            ("KYC_WEBHOOK_SECRET", "short"),
        ] {
            let err = Config::from_vars(vars(&[(name, value)])).expect_err("must fail");
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_vars(vars(&[
            ("JWT_SECRET", "a-very-long-secret-that-must-not-leak-0123"),
            ("ADMIN_EMAIL", "root@example.com"),
            ("ADMIN_PASSWORD", "hunter2hunter2hunter2"),
        ]))
        .expect("valid");
        let printed = format!("{config:?}");
        assert!(!printed.contains("must-not-leak"));
        assert!(!printed.contains("hunter2"));
    }
}
