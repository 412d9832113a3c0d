//! `config`: the TOML file (`Config::from_toml`, `Config::validate`,
//! `config::load`).

use std::path::{Path, PathBuf};

use castari_gateway::config::rate::MAX_WINDOW;
use castari_gateway::config::{self, AuthMode, Config, ConfigError, Flags};
use castari_gateway::types::Secret;
use http::{Method, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::gateway::{request, Gateway};
use crate::support::{corpus, corpus_dir, ensure, long, mutated, run_corpus, run_fuzz, seed};

/// The config's sections: every error's field starts with one of them.
const SECTIONS: &[&str] = &[
    "server",
    "upstream",
    "telemetry",
    "shaper",
    "cache",
    "auth",
    "retry",
    "breaker",
    "reload",
    "cluster",
    "ui",
];

/// An error that names a field, on one line, with a line number inside
/// the text when it gives one.
fn check_error(error: &ConfigError, text: &str, parsing: bool) -> Result<(), String> {
    let shown = error.to_string();
    ensure(!shown.contains(['\n', '\r']), || {
        format!("error on several lines: {shown:?}")
    })?;
    let first = error
        .field
        .split(['.', '['])
        .next()
        .unwrap_or_default()
        .to_string();
    let named = SECTIONS.contains(&first.as_str())
        || (parsing && error.field == "config")
        || (parsing && error.message.contains("unknown field"));
    ensure(named, || format!("error names no field: {shown:?}"))?;
    let given = (error.message.strip_suffix(')'))
        .and_then(|m| m.rsplit_once("(line "))
        .and_then(|(_, n)| n.parse::<usize>().ok());
    if let Some(line) = given {
        let lines = text.split('\n').count();
        ensure((1..=lines).contains(&line), || {
            format!("line {line} of a {lines}-line text: {shown:?}")
        })?;
    }
    Ok(())
}

fn env_with_key() -> std::collections::HashMap<String, String> {
    [(config::ENV_API_KEY.to_string(), "cast_parsers".to_string())].into()
}

/// `Config::from_toml`, then `validate`: errors name a field on one line;
/// no rate read has a window over a year; what parses prints back to TOML that parses to the same config; and
/// `config::load` on the file gives the parse error `from_toml` gives.
fn config_case(input: &[u8], file: &Path) -> Result<String, String> {
    let flags = Flags {
        config: Some(file.to_path_buf()),
        ..Flags::default()
    };
    let loaded = config::load(&flags, &env_with_key());
    let Ok(text) = std::str::from_utf8(input) else {
        let error = loaded
            .err()
            .ok_or("a file that is not UTF-8 loaded".to_string())?;
        ensure(error.field == "config", || format!("{error}"))?;
        return Ok("not UTF-8".to_string());
    };
    let parsed = match Config::from_toml(text) {
        Err(error) => {
            check_error(&error, text, true)?;
            ensure(loaded.as_ref().err() == Some(&error), || {
                format!("load says {loaded:?}, from_toml {error}")
            })?;
            return Ok(format!("parse: {error}"));
        }
        Ok(parsed) => parsed,
    };
    let rates = [parsed.shaper.crud_limit, parsed.shaper.invoke_limit]
        .into_iter()
        .chain(parsed.auth.keys.iter().filter_map(|key| key.rate));
    for rate in rates {
        ensure(rate.window <= MAX_WINDOW, || {
            format!("read a rate of {rate} (windows are at most a year)")
        })?;
    }
    let printed = toml::to_string(&parsed).map_err(|e| format!("cannot print it back: {e}"))?;
    let again = Config::from_toml(&printed).map_err(|e| format!("printed back: {e}\n{printed}"))?;
    ensure(again == parsed, || {
        format!("printed back, it reads otherwise:\n{printed}")
    })?;
    let keyed = Config {
        upstream_key: Some(Secret::new("cast_parsers".to_string())),
        ..parsed
    };
    match keyed.validate() {
        Ok(_) => Ok("valid".to_string()),
        Err(error) => {
            check_error(&error, text, false)?;
            Ok(format!("invalid: {error}"))
        }
    }
}

const TOML_DICT: &[&str] = &[
    "[server]",
    "[upstream]",
    "[shaper]",
    "[auth]",
    "[[auth.keys]]",
    "[cache]",
    "[cluster]",
    "[ui]",
    "[retry]",
    "[breaker]",
    "[reload]",
    "[telemetry]",
    "[upstream.credentials.x]",
    "\n",
    "=",
    " = ",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "listen",
    "url",
    "max_connections",
    "crud_limit",
    "mode",
    "\"keys\"",
    "\"127.0.0.1:0\"",
    "\"http://h\"",
    "0",
    "-1",
    "18446744073709551616",
    "1e308",
    "nan",
    "inf",
    "true",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\u{FEFF}",
    "\0",
    "\\u0000",
    "\\",
    "é",
];

/// TOML files of a few sections, each with a few keys.
fn toml_text() -> BoxedStrategy<Vec<u8>> {
    const HEADS: &[&str] = &[
        "[server]",
        "[upstream]",
        "[shaper]",
        "[auth]",
        "[[auth.keys]]",
        "[cache]",
        "[cluster]",
        "[ui]",
        "[retry]",
        "[breaker]",
        "[reload]",
        "[telemetry]",
        "[upstream.credentials.x]",
    ];
    const KEYS: &[&str] = &[
        "listen",
        "max_connections",
        "url",
        "proxy",
        "crud_limit",
        "invoke_limit",
        "crud_max_wait_ms",
        "replay_max_bytes",
        "mode",
        "log_level",
        "enabled",
        "db_path",
        "redis_url",
        "base_delay_ms",
        "max_delay_ms",
        "id",
        "sha256",
        "role",
        "rate",
        "key_env",
        "session_ttl_secs",
        "invoke_reserve_usd",
        "\"a b\"",
        "x",
    ];
    const VALUES: &[&str] = &[
        "\"127.0.0.1:0\"",
        "\"0.0.0.0:80\"",
        "0",
        "1",
        "-1",
        "true",
        "\"keys\"",
        "\"open\"",
        "\"100/60s\"",
        "\"1/99999h\"",
        "\"1/8760h\"",
        "\"1/8761h\"",
        "\"http://h\"",
        "\"socks5://p:1\"",
        "\"info\"",
        "18446744073709551615",
        "[]",
        "{}",
        "\"\"",
        "\"ci\"",
        "\"read\"",
        "1.5",
        "nan",
    ];
    let pair = (select(KEYS), select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let section = (select(HEADS), vec(pair, 0..4))
        .prop_map(|(head, pairs)| format!("{head}\n{}", pairs.concat()));
    vec(section, 0..4)
        .prop_map(|sections| sections.concat().into_bytes())
        .boxed()
}

/// Long files, made here rather than committed.
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    vec![
        long("nested_arrays", format!("x = {}", "[".repeat(20_000))),
        long("nested_tables", format!("x = {}", "{a = ".repeat(20_000))),
        long("dotted_key", format!("{} = 1", vec!["a"; 10_000].join("."))),
        long("many_tables", "[server]\n".repeat(5_000)),
        long(
            "long_string",
            format!("[telemetry]\nlog_level = \"{}\"\n", "x".repeat(100_000)),
        ),
    ]
}

#[test]
fn config_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<(String, (PathBuf, Vec<u8>))> = corpus("config")
        .into_iter()
        .map(|(name, text)| {
            let path = corpus_dir("config").join(&name);
            (name, (path, text))
        })
        .collect();
    for (name, text) in long_inputs() {
        let path = dir.path().join(name.replace(':', "_"));
        std::fs::write(&path, &text).unwrap();
        inputs.push((name, (path, text)));
    }
    run_corpus("config", inputs, |(path, text)| config_case(text, path));
}

#[test]
fn config_fuzz() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    run_fuzz(
        "config",
        256,
        mutated("config", TOML_DICT, toml_text()),
        |text| {
            std::fs::write(&file, text).unwrap();
            config_case(text, &file)
        },
    );
}

/// A config that validates serves: an ordinary request and an invocation
/// are answered (not 500, not hung) by a gateway built from it.
fn serves(text: &[u8]) -> Result<String, String> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Ok("not UTF-8".to_string());
    };
    let Ok(mut config) = Config::from_toml(text) else {
        return Ok("does not parse".to_string());
    };
    let dir = tempfile::tempdir().unwrap();
    config.upstream_key = Some(Secret::new("cast_parsers".to_string()));
    config.cluster.redis_url = None;
    if config.auth.effective_mode(config.server.listen) == AuthMode::Keys {
        config.auth.db_path = Some(dir.path().join("keys.db"));
    }
    let Ok(config) = config.validate() else {
        return Ok("invalid".to_string());
    };
    let gateway = Gateway::with_config(config, dir);
    let mut statuses = Vec::new();
    for (method, uri, body) in [
        (Method::GET, "/api/v1/agents", ""),
        (
            Method::POST,
            "/api/v1/agents/demo/invoke",
            r#"{"session_id":"s"}"#,
        ),
    ] {
        let answer = gateway
            .send(request(method.clone(), uri, body))
            .map_err(|e| format!("{method} {uri}: {e}"))?;
        ensure(answer.status != StatusCode::INTERNAL_SERVER_ERROR, || {
            format!("{method} {uri}: 500 {:?}", answer.body)
        })?;
        statuses.push(answer.status.as_u16());
    }
    Ok(format!("{statuses:?}"))
}

#[test]
fn config_that_validates_serves() {
    run_corpus("config", corpus("config"), |text| serves(text));
}

/// Fixed: a declared key's `rate` window over 584 years validated, then
/// governor panicked building its limiter. Now a window over a year is not
/// a rate: the file does not parse (`from_toml`, so `config::load`, whose
/// error `main` exits 78 on), naming the key's field and line; a year
/// parses and serves.
#[test]
fn regression_config_declared_key_rate_window() {
    let name = "declared_key_rate_window_584_years.toml";
    let text = String::from_utf8(seed("config", name)).unwrap();
    let error = Config::from_toml(&text).unwrap_err();
    assert_eq!(error.field, "auth.keys[0].rate", "{error}");
    assert!(
        error.message.contains("1/6000000h") && error.message.contains("8760h"),
        "{error}"
    );
    assert!(error.message.ends_with("(line 9)"), "{error}");
    let flags = Flags {
        config: Some(corpus_dir("config").join(name)),
        ..Flags::default()
    };
    assert_eq!(config::load(&flags, &env_with_key()).err(), Some(error));
    let year = text.replace("1/6000000h", "1/8760h");
    let parsed = Config::from_toml(&year).unwrap();
    assert_eq!(parsed.auth.keys[0].rate.map(|r| r.window), Some(MAX_WINDOW));
    assert_eq!(serves(year.as_bytes()).unwrap(), "[401, 401]");
}
