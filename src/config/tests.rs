use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("castari-gw-cfg-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn example_file_documents_exactly_the_defaults() {
    let text = include_str!("../../config/gateway.toml");
    let parsed = Config::from_toml(text).unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn unknown_key_names_the_section_and_key() {
    let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
    assert_eq!(err.field, "server.lisen");
    assert!(err.message.contains("unknown field `lisen`"), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn wrong_type_names_the_field() {
    let err = Config::from_toml("[server]\nmax_connections = \"many\"\n").unwrap_err();
    assert_eq!(err.field, "server.max_connections");
    let err = Config::from_toml("[server]\nlisten = \"nowhere\"\n").unwrap_err();
    assert_eq!(err.field, "server.listen");
    let err = Config::from_toml("[upstream]\nurl = \"::\"\n").unwrap_err();
    assert_eq!(err.field, "upstream.url");
}

#[test]
fn syntax_error_gives_a_line() {
    let err = Config::from_toml("[server\n").unwrap_err();
    assert_eq!(err.field, "config");
    assert!(err.message.contains("line 1"), "{err}");
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let file = write_temp(
        "prec.toml",
        "[server]\nlisten = \"127.0.0.1:1001\"\n[upstream]\nurl = \"http://127.0.0.1:2001\"\n",
    );
    let flags = Flags {
        config: Some(file.clone()),
        ..Flags::default()
    };
    let base = env(&[(ENV_API_KEY, "k")]);
    let from_file = load(&flags, &base).unwrap();
    assert_eq!(from_file.server.listen.port(), 1001);
    assert_eq!(from_file.upstream.url.as_str(), "http://127.0.0.1:2001/");
    assert_eq!(from_file.server.max_connections, 4096, "default kept");

    let with_env = env(&[
        (ENV_API_KEY, "k"),
        (ENV_LISTEN, "127.0.0.1:1002"),
        (ENV_UPSTREAM_URL, "http://127.0.0.1:2002"),
    ]);
    let from_env = load(&flags, &with_env).unwrap();
    assert_eq!(from_env.server.listen.port(), 1002);
    assert_eq!(from_env.upstream.url.port(), Some(2002));

    let all = Flags {
        config: Some(file),
        listen: Some("127.0.0.1:1003".parse().unwrap()),
        upstream: Some("http://127.0.0.1:2003".parse().unwrap()),
    };
    let from_flags = load(&all, &with_env).unwrap();
    assert_eq!(from_flags.server.listen.port(), 1003);
    assert_eq!(from_flags.upstream.url.port(), Some(2003));
}

#[test]
fn config_file_can_come_from_the_environment() {
    let file = write_temp("envfile.toml", "[server]\nlisten = \"127.0.0.1:1004\"\n");
    let e = env(&[(ENV_API_KEY, "k"), (ENV_CONFIG, file.to_str().unwrap())]);
    assert_eq!(
        load(&Flags::default(), &e).unwrap().server.listen.port(),
        1004
    );
}

#[test]
fn missing_key_is_an_error() {
    let err = load(&Flags::default(), &env(&[])).unwrap_err();
    assert_eq!(err.field, "upstream.api_key_file");
}

#[test]
fn key_comes_from_env_before_file() {
    let key_file = write_temp("key", "cast_from_file\n");
    let cfg = write_temp(
        "withkey.toml",
        &format!(
            "[upstream]\napi_key_file = {:?}\n",
            key_file.to_str().unwrap()
        ),
    );
    let flags = Flags {
        config: Some(cfg),
        ..Flags::default()
    };
    let from_file = load(&flags, &env(&[])).unwrap();
    assert_eq!(from_file.upstream_key.unwrap().expose(), "cast_from_file");
    let from_env = load(&flags, &env(&[(ENV_API_KEY, "cast_from_env")])).unwrap();
    assert_eq!(from_env.upstream_key.unwrap().expose(), "cast_from_env");
}

#[test]
fn errors_never_contain_the_key() {
    let err = load(
        &Flags::default(),
        &env(&[(ENV_API_KEY, "cast_bad\u{7f}key")]),
    )
    .unwrap_err();
    assert_eq!(err.field, ENV_API_KEY);
    assert!(!err.to_string().contains("cast_bad"));
}

#[test]
fn bad_values_name_their_field() {
    let cases = [
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        (
            "[server]\nheader_read_timeout_ms = 0\n",
            "server.header_read_timeout_ms",
        ),
        ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url"),
        ("[upstream]\nurl = \"http://u:p@x\"\n", "upstream.url"),
        ("[upstream]\nurl = \"http://x/?q=1\"\n", "upstream.url"),
        (
            "[upstream]\ncrud_timeout_ms = 0\n",
            "upstream.crud_timeout_ms",
        ),
        (
            "[telemetry]\nlog_format = \"xml\"\n",
            "telemetry.log_format",
        ),
        ("[telemetry]\nlog_level = \"=[\"\n", "telemetry.log_level"),
        ("[cache]\nmax_bytes = 0\n", "cache.max_bytes"),
        (
            "[cache]\nmax_bytes = 1000\nmax_entry_bytes = 2000\n",
            "cache.max_entry_bytes",
        ),
        ("[cache.ttl_secs]\nagent = -1\n", "cache.ttl_secs.agent"),
        ("[cache.ttl_secs]\nnope = 1\n", "cache.ttl_secs.nope"),
    ];
    for (text, field) in cases {
        let path = write_temp("bad.toml", text);
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let err = load(&flags, &env(&[(ENV_API_KEY, "k")])).unwrap_err();
        assert_eq!(err.field, field, "{text}: {err}");
    }
    let err = load(
        &Flags::default(),
        &env(&[(ENV_API_KEY, "k"), (ENV_LISTEN, "x")]),
    )
    .unwrap_err();
    assert_eq!(err.field, ENV_LISTEN);
}

#[test]
fn a_bad_rate_names_its_field_on_one_line() {
    let err = Config::from_toml("[shaper]\ncrud_limit = \"fast\"\n").unwrap_err();
    assert_eq!(err.field, "shaper.crud_limit");
    assert!(err.message.contains("N/WINDOW"), "{err}");
    assert!(!err.to_string().contains('\n'));
    let zero = Config {
        upstream_key: Some(Secret::new("k".to_string())),
        shaper: ShaperConfig {
            crud_max_wait_ms: 0,
            ..ShaperConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(
        zero.validate().unwrap_err().field,
        "shaper.crud_max_wait_ms"
    );
}

#[test]
fn a_motion_refresh_out_of_range_names_its_field() {
    for bad in [0, 60_001] {
        let config = Config {
            upstream_key: Some(Secret::new("k".to_string())),
            cache: crate::config::CacheConfig {
                motion_refresh_ms: bad,
                ..crate::config::CacheConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field,
            "cache.motion_refresh_ms"
        );
    }
}

#[test]
fn open_mode_on_a_network_address_needs_an_explicit_yes() {
    let base = [
        ("CASTARI_API_KEY", "cast_k"),
        ("CASTARI_GATEWAY_LISTEN", "0.0.0.0:8787"),
    ];
    // Unset mode on a network address means keys mode: fine.
    let config = load(&Flags::default(), &env(&base)).unwrap();
    assert_eq!(
        config.auth.effective_mode(config.server.listen),
        AuthMode::Keys
    );
    let open = [base[0], base[1], ("CASTARI_GATEWAY_AUTH_MODE", "open")];
    let err = load(&Flags::default(), &env(&open)).unwrap_err();
    assert_eq!(err.field, "auth.mode");
    assert!(err.message.contains("allow_open_on_network"), "{err}");
    let allowed = [
        open[0],
        open[1],
        open[2],
        ("CASTARI_GATEWAY_ALLOW_OPEN_ON_NETWORK", "true"),
    ];
    assert!(load(&Flags::default(), &env(&allowed)).is_ok());
    // Loopback defaults to open.
    let config = load(&Flags::default(), &env(&base[..1])).unwrap();
    assert_eq!(
        config.auth.effective_mode(config.server.listen),
        AuthMode::Open
    );
    assert_eq!(config.auth.effective_db(AuthMode::Open), None);
}

#[test]
fn auth_keys_credentials_and_admin_key_are_checked_by_field() {
    let key = [("CASTARI_API_KEY", "cast_k")];
    let bad = |toml: &str, extra: &[(&str, &str)]| {
        let path = write_temp("auth.toml", toml);
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let mut pairs = key.to_vec();
        pairs.extend_from_slice(extra);
        load(&flags, &env(&pairs)).unwrap_err()
    };
    let declared = "[[auth.keys]]\nid = \"ci\"\nname = \"ci\"\n";
    let err = bad(
        &format!("{declared}role = \"read\"\nsha256 = \"abc\"\n"),
        &[],
    );
    assert_eq!(err.field, "auth.keys[0].sha256");
    let hash = "a".repeat(64);
    let err = bad(
        &format!("{declared}role = \"read\"\nsha256 = \"{hash}\"\nupstream = \"team-x\"\n"),
        &[],
    );
    assert_eq!(err.field, "auth.keys[0].upstream");
    let err = bad(
        &format!("{declared}sha256 = \"{hash}\"\nrole = \"root\"\n"),
        &[],
    );
    assert_eq!(err.field, "auth.keys[0].role", "{err}");
    let err = bad("[upstream.credentials.team-b]\nkey_env = \"TEAM_B\"\n", &[]);
    assert_eq!(err.field, "upstream.credentials.team-b.key_env");
    assert!(err.message.contains("TEAM_B is not set"));
    let err = bad("[upstream.credentials.default]\nkey_env = \"X\"\n", &[]);
    assert_eq!(err.field, "upstream.credentials.default");
    let err = bad("[auth]\ninvoke_reserve_usd = \"-1\"\n", &[]);
    assert_eq!(err.field, "auth.invoke_reserve_usd");
    let err = bad("", &[("CASTARI_GATEWAY_ADMIN_KEY", "short")]);
    assert_eq!(err.field, "CASTARI_GATEWAY_ADMIN_KEY");
    assert!(!err.to_string().contains("short"), "never echo a key");

    let path = write_temp(
        "auth-ok.toml",
        "[upstream.credentials.team-b]\nkey_env = \"TEAM_B\"\n",
    );
    let flags = Flags {
        config: Some(path),
        ..Flags::default()
    };
    let config = load(&flags, &env(&[key[0], ("TEAM_B", "cast_team_b")])).unwrap();
    assert_eq!(config.named_keys["team-b"].expose(), "cast_team_b");
}

#[test]
fn cluster_mode_is_one_setting_from_the_file_or_the_environment() {
    let key = [(ENV_API_KEY, "cast_abcdefgh_0123456789")];
    let config = load(&Flags::default(), &env(&key)).unwrap();
    assert!(!config.cluster.enabled(), "off by default");

    let file = write_temp(
        "cluster.toml",
        "[cluster]\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\nprefix = \"team-a\"\n",
    );
    let flags = Flags {
        config: Some(file),
        ..Flags::default()
    };
    let config = load(&flags, &env(&key)).unwrap();
    assert!(config.cluster.enabled());
    assert_eq!(config.cluster.prefix, "team-a");
    // The URL (and its password) never prints.
    assert!(!format!("{:?}", config.cluster).contains("pw@"));
    assert!(!toml::to_string(&config).unwrap().contains("pw@"));

    let mut vars = key.to_vec();
    vars.push((ENV_REDIS_URL, "rediss://redis.internal:6380"));
    let config = load(&flags, &env(&vars)).unwrap();
    assert_eq!(
        config.cluster.redis_url.as_ref().unwrap().expose(),
        "rediss://redis.internal:6380",
        "the environment wins over the file"
    );
}

#[test]
fn bad_cluster_settings_name_their_field() {
    let cases = [
        ("redis_url = \"http://127.0.0.1:6379\"", "cluster.redis_url"),
        ("redis_url = \"not a url\"", "cluster.redis_url"),
        ("prefix = \"\"", "cluster.prefix"),
        ("prefix = \"has space\"", "cluster.prefix"),
        ("expected_replicas = 0", "cluster.expected_replicas"),
        ("op_timeout_ms = 1", "cluster.op_timeout_ms"),
        ("event_ack_ms = 60000", "cluster.event_ack_ms"),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_ca_file = \"/ca.pem\"",
            "cluster.redis_ca_file",
        ),
        (
            "redis_url = \"redis://127.0.0.1\"\n[auth]\ndb_path = \"keys.db\"",
            "auth.db_path",
        ),
    ];
    for (line, field) in cases {
        let mut config = Config::from_toml(&format!("[cluster]\n{line}\n")).unwrap();
        config.upstream_key = Some(Secret::new("cast_abcdefgh_0123456789".into()));
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field, "{line}: {err}");
    }
}
