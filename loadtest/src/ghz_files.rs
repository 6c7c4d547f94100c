//! The ghz files under `loadtest/ghz/` are what a bastion runs: they must
//! parse, and their call data must make exactly the seed's scenarios.

use std::{collections::HashMap, path::PathBuf, process::Command};

use slotgate::domain::{Limits, NewReservation};

use crate::ghz::{GhzConfig, render, reservation_from_json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

#[test]
fn every_ghz_config_parses_and_its_call_data_makes_the_seed_scenario() {
    let limits = Limits { max_party_size: 20, max_menu_items: 50 };
    for (file, users, clicks) in [
        ("burst-100.json", 100, 1),
        ("burst-200.json", 200, 1),
        ("burst-400.json", 400, 1),
        ("burst-800.json", 800, 1),
        ("duplicate-2000.json", 2_000, 3),
    ] {
        let config = GhzConfig::read(&repo().join("loadtest/ghz").join(file)).unwrap();
        let total = (users * clicks) as u64;
        assert_eq!(config.total, Some(total), "{file}");
        assert_eq!(config.concurrency, Some(total as usize), "{file}: every call at once");
        assert_eq!(config.count_errors, Some(true), "{file}: refusals must count in the latency figures");
        assert_eq!(config.call.as_deref(), Some("slotgate.v1.Reservations.CreateReservation"));
        assert!(repo().join(config.proto.as_deref().unwrap()).is_file(), "{file}: proto path");
        let data_file = repo().join(config.data_file.as_deref().unwrap());
        let template = std::fs::read_to_string(&data_file).unwrap();

        let mut clicks_of: HashMap<String, usize> = HashMap::new();
        let mut request_ids = std::collections::HashSet::new();
        for n in 0..total {
            let request = reservation_from_json(&render(&template, n, "w0").unwrap()).unwrap();
            NewReservation::parse(&request, limits).unwrap_or_else(|e| panic!("{file}: request {n} is invalid: {e}"));
            assert!(request_ids.insert(request.request_id.clone()), "{file}: request id repeated");
            *clicks_of.entry(request.user_id).or_default() += 1;
        }
        assert_eq!(clicks_of.len(), users, "{file}: users");
        assert!(clicks_of.values().all(|&c| c == clicks), "{file}: {clicks} clicks per user");
    }
}

#[test]
fn the_contract_compiles_with_plain_protoc_and_no_extra_import_paths() {
    // Only the file's own directory, as ghz's --proto gives it, plus the
    // well-known types that every protoc (and ghz) ships with.
    let protoc = protoc_bin_vendored::protoc_bin_path().unwrap();
    let well_known = protoc_bin_vendored::include_path().unwrap();
    let out = std::env::temp_dir().join(format!("slotgate-protoc-{}.pb", std::process::id()));
    let status = Command::new(protoc)
        .arg("-I")
        .arg(repo().join("proto/slotgate/v1"))
        .arg("-I")
        .arg(well_known)
        .arg("--descriptor_set_out")
        .arg(&out)
        .arg("reservations.proto")
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(status.success(), "protoc rejected proto/slotgate/v1/reservations.proto");
}
