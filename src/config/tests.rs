//! The settings as a whole: their checks, and the k8s manifests and docs
//! that must agree with them.

use super::*;

#[test]
fn a_namespace_with_a_brace_is_rejected_because_it_would_break_hash_tags() {
    assert!(parse_namespace("a{b").is_err());
    assert!(parse_namespace("").is_err());
    assert_eq!(parse_namespace("t-1.x_y").unwrap(), "t-1.x_y");
}

#[test]
fn a_lease_shorter_than_twice_a_winners_longest_way_to_its_commit_is_refused() {
    let mut config = Config::from_env();
    assert_eq!(config.check(), Ok(()), "the defaults hold");
    // 2 x (1 s + 2 s + 5 s) = 16 s.
    config.hold_lease = Duration::from_millis(15_999);
    let refused = config.check().unwrap_err();
    assert!(refused.contains("--hold-lease-ms") && refused.contains("16000 ms"), "{refused}");
    config.hold_lease = Duration::from_secs(16);
    assert_eq!(config.check(), Ok(()));
    config.db_transaction_timeout = Duration::from_secs(6);
    assert!(config.check().is_err(), "a longer transaction needs a longer lease");
}

#[test]
fn every_setting_the_k8s_config_map_sets_is_one_slotgate_reads() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let known: Vec<String> = cli
        .get_arguments()
        .chain(serve.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let config_map = include_str!("../../k8s/base/configmap.yaml");
    let set: Vec<&str> = config_map
        .lines()
        .filter_map(|l| l.trim_start().split_once(':').map(|(k, _)| k))
        .filter(|k| k.starts_with("SLOTGATE_"))
        .collect();
    assert!(set.len() > 20, "the config map sets {} settings?", set.len());
    for name in set {
        assert!(known.iter().any(|k| k == name), "k8s sets {name}, which slotgate does not read");
    }
}

/// The settings table of docs/operations.md, rendered from the flags as
/// the program reads them: `| flag | environment | default |`, in the
/// order they are declared.
fn settings_rows() -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    cli.get_arguments()
        .chain(serve.get_arguments())
        .filter_map(|a| {
            let long = a.get_long()?;
            let env = a.get_env()?.to_string_lossy();
            let default = match a.get_default_values() {
                [] => "(unset)".to_owned(),
                [v] if v.is_empty() => "(empty)".to_owned(),
                values => format!("`{}`", values.iter().map(|v| v.to_string_lossy()).collect::<Vec<_>>().join(",")),
            };
            Some(format!("| `--{long}` | `{env}` | {default} |"))
        })
        .collect()
}

#[test]
fn the_settings_table_in_the_docs_lists_every_flag_its_variable_and_default() {
    let doc = include_str!("../../docs/operations.md");
    let table = doc
        .split_once("<!-- config-table:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- config-table:end -->"))
        .map(|(table, _)| table)
        .expect("docs/operations.md has the config-table markers");
    let documented: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").take(3).collect();
            format!("{} |", cells.join(" | "))
        })
        .collect();
    let expected = settings_rows();
    assert!(expected.len() > 30, "{} settings?", expected.len());
    assert_eq!(
        documented,
        expected,
        "docs/operations.md's settings table must list, in this order:\n{}",
        expected.join("\n")
    );
}

#[test]
fn the_cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
