use super::*;
use std::collections::HashMap;

fn dirs() -> Dirs {
    Dirs {
        config_file: "/home/u/.config/local-agent/config.toml".into(),
        db: "/home/u/.local/share/local-agent/agent.db".into(),
        models: "/home/u/.local/share/local-agent/models".into(),
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn settings(flags: &Flags, env: &[(&str, &str)], file: &FileConfig) -> Settings {
    let env = env_of(env);
    let path = config_path(flags, &env, Some(&dirs())).unwrap();
    resolve(flags, &env, path, file, Some(&dirs())).unwrap()
}

#[test]
fn the_api_timeout_comes_from_flag_env_file_or_default() {
    let file = FileConfig {
        api_timeout: Some(30),
        ..Default::default()
    };
    let s = settings(&Flags::default(), &[], &FileConfig::default());
    assert_eq!(s.api.timeout.value, DEFAULT_API_TIMEOUT_SECS);
    assert_eq!(s.api.timeout.source, Source::Default);
    let s = settings(&Flags::default(), &[], &file);
    assert_eq!(
        (s.api.timeout.value, s.api.timeout.source),
        (30, Source::File)
    );
    let s = settings(&Flags::default(), &[(ENV_API_TIMEOUT, "45")], &file);
    assert_eq!(
        (s.api.timeout.value, s.api.timeout.source),
        (45, Source::Env)
    );
    let flags = Flags {
        api_timeout: Some(5),
        ..Default::default()
    };
    let s = settings(&flags, &[(ENV_API_TIMEOUT, "45")], &file);
    assert_eq!(
        (s.api.timeout.value, s.api.timeout.source),
        (5, Source::Flag)
    );
    let env = env_of(&[(ENV_API_TIMEOUT, "soon")]);
    let path = config_path(&Flags::default(), &env, Some(&dirs())).unwrap();
    let err = resolve(&Flags::default(), &env, path, &file, Some(&dirs())).unwrap_err();
    assert!(err.to_string().contains(ENV_API_TIMEOUT), "{err}");
    let zero = Flags {
        api_timeout: Some(0),
        ..Default::default()
    };
    let path = config_path(&zero, &env_of(&[]), Some(&dirs())).unwrap();
    assert!(resolve(&zero, &env_of(&[]), path, &file, Some(&dirs())).is_err());
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let file = FileConfig {
        api_url: Some("http://file:1".into()),
        token: Some("file-token".into()),
        db: Some("/file.db".into()),
        models_dir: None,
        api_timeout: Some(30),
        embed: EmbedFileConfig {
            model: Some("file-model".into()),
            url: Some("http://embed-file/v1".into()),
            ..Default::default()
        },
        anki: Default::default(),
    };
    let env = [
        (ENV_API_URL, "http://env:2"),
        (ENV_TOKEN, "env-token"),
        (ENV_EMBED_MODEL, "env-model"),
    ];
    let flags = Flags {
        api_url: Some("http://flag:3".into()),
        ..Default::default()
    };
    let s = settings(&flags, &env, &file);
    assert_eq!(s.api.url.clone().unwrap().value, "http://flag:3");
    assert_eq!(s.api.url.unwrap().source, Source::Flag);
    assert_eq!(
        s.api.token.unwrap(),
        Sourced {
            value: "env-token".into(),
            source: Source::Env
        }
    );
    assert_eq!(s.db.value, PathBuf::from("/file.db"));
    assert_eq!(s.db.source, Source::File);
    assert_eq!(s.embed.model.value, "env-model");
    assert_eq!(s.embed.url.unwrap().source, Source::File);

    let s = settings(&Flags::default(), &[], &FileConfig::default());
    assert!(s.api.url.is_none() && s.api.token.is_none());
    assert_eq!(s.db.source, Source::Default);
    assert_eq!(s.config_file.value, dirs().config_file);
    assert_eq!(s.embed.model.value, HASHED_NGRAMS_MODEL);
    assert!(s.embed.is_builtin());
}

#[test]
fn empty_env_values_count_as_unset() {
    let file = FileConfig {
        token: Some("file-token".into()),
        ..Default::default()
    };
    let s = settings(&Flags::default(), &[(ENV_TOKEN, "")], &file);
    assert_eq!(s.api.token.unwrap().value, "file-token");
}

#[test]
fn the_config_file_location_follows_flag_then_env() {
    let env = env_of(&[(ENV_CONFIG, "/env/config.toml")]);
    let flagged = Flags {
        config: Some("/flag/config.toml".into()),
        ..Default::default()
    };
    assert_eq!(
        config_path(&flagged, &env, Some(&dirs())).unwrap().value,
        PathBuf::from("/flag/config.toml")
    );
    assert_eq!(
        config_path(&Flags::default(), &env, Some(&dirs()))
            .unwrap()
            .value,
        PathBuf::from("/env/config.toml")
    );
    assert!(matches!(
        config_path(&Flags::default(), &env_of(&[]), None),
        Err(ConfigError::NoHome)
    ));
}

#[test]
fn bad_urls_are_refused_with_the_value() {
    let flags = Flags {
        api_url: Some("localhost:3000".into()),
        ..Default::default()
    };
    let env = env_of(&[]);
    let path = config_path(&flags, &env, Some(&dirs())).unwrap();
    let err = resolve(&flags, &env, path, &FileConfig::default(), Some(&dirs())).unwrap_err();
    assert!(err.to_string().contains("localhost:3000"), "{err}");
}

#[test]
fn settings_serialise_without_secrets() {
    let file = FileConfig {
        token: Some("very-secret".into()),
        ..Default::default()
    };
    let s = settings(&Flags::default(), &[], &file);
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("very-secret"), "{json}");
    assert!(json.contains("<redacted>"));
}

#[test]
fn anki_settings_resolve_flag_env_file_default() {
    let file = FileConfig {
        anki: AnkiFileConfig {
            url: Some("http://file:1".into()),
            deck: Some("FileDeck".into()),
            deleted_in_anki: Some(DeletedInAnki::Recreate),
            ..Default::default()
        },
        ..Default::default()
    };
    let flags = Flags {
        anki_deck: Some("FlagDeck".into()),
        ..Default::default()
    };
    let s = settings(&flags, &[(ENV_ANKI_URL, "http://env:2")], &file).anki;
    assert_eq!(s.url.value, "http://env:2");
    assert_eq!(s.url.source, Source::Env);
    assert_eq!(s.deck.value, "FlagDeck");
    assert_eq!(s.deck.source, Source::Flag);
    assert_eq!(s.notes.value, NotePolicy::Both);
    assert_eq!(s.deleted_in_anki.value, DeletedInAnki::Recreate);
    assert_eq!(s.deleted_in_anki.source, Source::File);
    assert_eq!(s.deleted_upstream.value, DeletedUpstream::Tag);
    let d = settings(&Flags::default(), &[], &FileConfig::default()).anki;
    assert_eq!(d.url.value, DEFAULT_ANKI_URL);
    assert_eq!(d.deck.value, DEFAULT_DECK);
    assert_eq!(d.timeout.value, DEFAULT_ANKI_TIMEOUT_SECS);
    assert_eq!(d.timeout.source, Source::Default);
    let with_timeout = FileConfig {
        anki: AnkiFileConfig {
            timeout: Some(30),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = settings(&Flags::default(), &[], &with_timeout).anki;
    assert_eq!((t.timeout.value, t.timeout.source), (30, Source::File));
    let t = settings(
        &Flags::default(),
        &[(ENV_ANKI_TIMEOUT, "600")],
        &with_timeout,
    )
    .anki;
    assert_eq!((t.timeout.value, t.timeout.source), (600, Source::Env));
    let env = env_of(&[(ENV_ANKI_TIMEOUT, "0")]);
    let path = config_path(&Flags::default(), &env, Some(&dirs())).unwrap();
    let err = resolve(&Flags::default(), &env, path, &with_timeout, Some(&dirs())).unwrap_err();
    assert!(err.to_string().contains("[anki] timeout"), "{err}");
}

#[test]
fn every_section_is_shown_with_its_sources() {
    let file = FileConfig {
        embed: EmbedFileConfig {
            dimensions: Some(384),
            ..Default::default()
        },
        anki: AnkiFileConfig {
            api_key: Some("anki-secret".into()),
            notes: Some(NotePolicy::Fragments),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = settings(&Flags::default(), &[(ENV_ANKI_DECK, "Env::Deck")], &file);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["db"]["source"], "default");
    assert!(json["api_url"].is_null(), "{json}");
    assert_eq!(json["api_timeout"]["value"], 60);
    assert_eq!(json["embed"]["dimensions"]["value"], 384);
    assert_eq!(json["anki"]["deck"]["value"], "Env::Deck");
    assert_eq!(json["anki"]["deck"]["source"], "env");
    assert_eq!(json["anki"]["notes"]["value"], "fragments");
    assert_eq!(json["anki"]["notes"]["source"], "file");
    assert_eq!(json["anki"]["url"]["source"], "default");
    assert_eq!(json["anki"]["api_key"]["value"], "<redacted>");
    assert!(!json.to_string().contains("anki-secret"));
    let names: Vec<_> = s.sections().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, [None, Some("embed"), Some("anki")]);
}
