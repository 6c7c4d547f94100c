//! Everything in `loadtest/` that knows the seed's scenarios reads them from
//! `loadtest/scenarios.json` (or is generated from it: see `ghz_files`).
//! These tests fail when a consumer stops reading it, reads a key it does
//! not have, or names a scenario it does not define.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use clap::Parser;
use serde_json::Value;

use crate::{Args, ghz_files::repo, scenario_of, scenarios::seed};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn definition() -> Value {
    serde_json::from_str(crate::scenarios::DEFINITION).unwrap()
}

/// The words after each `prefix` in `text` (`SEED.capacity` -> `capacity`).
fn keys_after<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    text.match_indices(prefix)
        .filter(|(at, _)| !text[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .filter(|key| !key.is_empty())
        .collect()
}

#[test]
fn the_tool_takes_its_defaults_from_the_definition() {
    let seed = seed();
    let args = Args::try_parse_from(["slotgate-load"]).unwrap();
    assert_eq!(
        (args.restaurant, args.date.as_str(), args.time.as_str(), args.capacity, args.party_size),
        (seed.restaurant_id, seed.date.as_str(), seed.time.as_str(), seed.capacity, seed.party_size)
    );
    assert_eq!(scenario_of(&args), seed.headline);
    for s in &seed.scenarios {
        let args = Args::try_parse_from(["slotgate-load", "--scenario", &s.name]).unwrap();
        assert_eq!(scenario_of(&args), s.name);
    }
    assert!(
        Args::try_parse_from(["slotgate-load", "--scenario", "no-such-scenario"]).is_err(),
        "only defined scenarios"
    );
    assert!(Args::try_parse_from(["slotgate-load", "--party-size", "0"]).is_err());
    let custom = Args::try_parse_from(["slotgate-load", "--config", "x.json"]).unwrap();
    assert_eq!(scenario_of(&custom), "custom");
}

#[test]
fn k6_reads_the_definition() {
    let script = read("loadtest/k6/burst.js");
    let open = "open('../scenarios.json')";
    assert!(script.contains(open), "burst.js must read the definition with {open}");
    assert_eq!(
        repo().join("loadtest/k6/../scenarios.json").canonicalize().unwrap(),
        repo().join("loadtest/scenarios.json").canonicalize().unwrap()
    );
    // Every key it reads is in the definition, at the level it reads it.
    let definition = definition();
    for key in keys_after(&script, "SEED.") {
        assert!(definition.get(key).is_some(), "burst.js reads SEED.{key}: not in loadtest/scenarios.json");
    }
    for key in keys_after(&script, "SCENARIO.") {
        for s in definition["scenarios"].as_array().unwrap() {
            assert!(s.get(key).is_some(), "burst.js reads SCENARIO.{key}: not in every scenario of the definition");
        }
    }
    assert!(keys_after(&script, "SCENARIO.").contains("winners"), "its threshold is the scenario's winners");
    // Nothing of a scenario's shape comes from the command line, only
    // which scenario to play.
    let env: BTreeSet<&str> = keys_after(&script, "__ENV.");
    assert_eq!(env, BTreeSet::from(["CALL", "HOST", "SCENARIO", "TOKEN"]), "burst.js's -e settings");
}

#[test]
fn results_py_and_compare_sh_read_the_definition() {
    let seed = seed();
    let output = Command::new("python3").arg("loadtest/results.py").arg("--scenarios").current_dir(repo()).output();
    let output = output.expect("python3 runs results.py (compare.sh needs it too)");
    assert!(output.status.success(), "results.py --scenarios: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "results.py --scenarios: {text}");
    assert_eq!(lines[0], format!("{} {}", seed.capacity, seed.party_size));
    let names: Vec<&str> = seed.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(lines[1], names.join(" "));
    // Highlighted (plotted, cross-checked with k6): the largest of each
    // click count.
    let mut largest: BTreeMap<usize, &crate::scenarios::Scenario> = BTreeMap::new();
    for s in &seed.scenarios {
        if largest.get(&s.clicks).is_none_or(|l| s.users > l.users) {
            largest.insert(s.clicks, s);
        }
    }
    let highlighted: Vec<&str> = names.iter().copied().filter(|n| largest.values().any(|l| l.name == *n)).collect();
    assert_eq!(lines[2], highlighted.join(" "));
    // The headline: also fired at a slot's opening.
    assert_eq!(lines[3], seed.headline);

    // What the report uses of each scenario.
    let script = "import json, sys; sys.path.insert(0, 'loadtest'); import results; \
                  d = results.definition(); print(json.dumps({'headline': d['headline'], 'by_name': d['by_name']}))";
    let output = Command::new("python3").arg("-c").arg(script).current_dir(repo()).output().unwrap();
    assert!(output.status.success(), "results.definition(): {}", String::from_utf8_lossy(&output.stderr));
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["headline"], Value::from(seed.headline.as_str()));
    for s in definition()["scenarios"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        for key in ["users", "clicks", "winners", "seed_p95_s"] {
            assert_eq!(view["by_name"][name][key].as_f64(), s[key].as_f64(), "results.py's {key} of {name}");
        }
    }

    let compare = read("loadtest/compare.sh");
    assert!(
        compare.contains("< <(python3 loadtest/results.py --scenarios)"),
        "compare.sh takes its bursts, capacity and party size from results.py --scenarios"
    );
    assert!(compare.contains("BURSTS=${BURSTS:-$SCENARIOS}"), "compare.sh runs every defined scenario by default");
    assert!(
        compare.contains("read -r HEADLINE; }") && compare.contains("OPENING=${OPENING:-$HEADLINE}"),
        "compare.sh fires the definition's headline at a slot's opening by default"
    );
}

/// Every scenario named anywhere in the load kit (a family's name, a dash,
/// digits) is one the definition has.
#[test]
fn every_scenario_named_in_the_load_kit_is_defined() {
    let seed = seed();
    let families: BTreeSet<&str> =
        seed.scenarios.iter().filter_map(|s| s.name.rsplit_once('-').map(|(family, _)| family)).collect();
    let mut files = vec![
        "loadtest/README.md".to_owned(),
        "loadtest/compare.sh".to_owned(),
        "loadtest/results.py".to_owned(),
        "loadtest/k6/burst.js".to_owned(),
        "loadtest/ghz/run.sh".to_owned(),
    ];
    for entry in std::fs::read_dir(repo().join("loadtest/src")).unwrap() {
        let path = entry.unwrap().path();
        files.push(path.strip_prefix(repo()).unwrap().to_string_lossy().into_owned());
    }
    let mut unknown = BTreeSet::new();
    for file in &files {
        let text = read(file);
        for family in &families {
            let prefix = format!("{family}-");
            for (at, _) in text.match_indices(&prefix) {
                if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    continue;
                }
                let rest = &text[at + prefix.len()..];
                let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                if digits == 0 {
                    continue;
                }
                let name = &text[at..at + prefix.len() + digits];
                if seed.scenario(name).is_none() {
                    unknown.insert(format!("{file}: {name}"));
                }
            }
        }
    }
    assert!(unknown.is_empty(), "scenarios named but not in loadtest/scenarios.json: {unknown:?}");
}

#[test]
fn keys_after_finds_property_reads() {
    let keys = keys_after("a = SEED.capacity + X.SEED.no + SEED.party_size; SEED.", "SEED.");
    assert_eq!(keys, BTreeSet::from(["capacity", "party_size"]));
}

/// The README's table of the seed's scenarios says what the definition says.
#[test]
fn the_readmes_table_of_scenarios_is_the_definition() {
    let readme = read("loadtest/README.md");
    let seed = seed();
    for said in [
        format!("restaurant {}, {} {}, {} seats", seed.restaurant_id, seed.date, seed.time, seed.capacity),
        format!("for a party of {}", seed.party_size),
        format!("`{}` is its *headline* scenario", seed.headline),
    ] {
        assert!(readme.contains(&said), "loadtest/README.md must say {said:?}");
    }
    let definition = definition();
    let rows: BTreeMap<String, Vec<String>> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<String> = line
                .strip_prefix('|')?
                .split('|')
                .map(|c| c.trim().replace(',', ""))
                .filter(|c| !c.is_empty())
                .collect();
            Some((cells.first()?.clone(), cells))
        })
        .collect();
    for s in definition["scenarios"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let row = rows.get(name).unwrap_or_else(|| panic!("loadtest/README.md: no table row for {name}"));
        let (users, clicks) = (s["users"].as_u64().unwrap(), s["clicks"].as_u64().unwrap());
        let expected = [
            users.to_string(),
            clicks.to_string(),
            (users * clicks).to_string(),
            s["winners"].to_string(),
            format!("{:.1} s", s["seed_p95_s"].as_f64().unwrap()),
        ];
        assert_eq!(row[1..], expected, "loadtest/README.md's row for {name}");
    }
}
