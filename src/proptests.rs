//! Property tests (issue 9): the parsers of everything that comes from
//! outside the process, the config loader, durations, xCAT's command output
//! and the SOAP (WinRM, vSphere) documents, do not panic on any input, and
//! the bounds on kept output hold. They live here, inside the crate,
//! because those parsers are crate-private.
//!
//! `cargo test` runs each with proptest's default case count (256);
//! tests/fuzz/run.sh runs them for minutes with many more
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use std::path::Path;

use crate::{config, duration, exec, os, provision, xml};

/// Fragments of reimage's TOML: keys, headers and values, some wrong on
/// purpose, so random lines reach past the TOML parser into validation.
fn toml_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "max_attempts",
        "timeout_growth",
        "state_dir",
        "address",
        "node",
        "port",
        "os",
        "family",
        "channel",
        "provisioner",
        "source",
        "kind",
        "load",
        "timeout",
        "power_reset",
        "stable_for",
        "connect_timeout",
        "probe_interval",
        "command_timeout",
        "steps",
        "timeouts",
        "image_check",
        "user",
        "first_boot",
    ]);
    let header = prop::sample::select(vec![
        "[computers.pc7]",
        "[computers.\"../x\"]",
        "[images.img]",
        "[images.img.image_check]",
        "[os.appliance]",
        "[os.linux]",
        "[os.windows-6]",
        "[provisioners.script]",
        "[provisioners.x]",
        "[[images]]",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-z0-9 .:-]{0,12}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"command\"",
            "\"generic\"",
            "\"none\"",
            "\"ssh\"",
            "\"winrm\"",
            "\"linux\"",
            "\"appliance\"",
            "\"script\"",
            "\"1h30m\"",
            "\"0s\"",
            "\"1e20\"",
            "\"99999999999999999999h\"",
            "true",
            "[\"true\"]",
            "[]",
            "[{ wait = \"port\", port = 22 }]",
            "[{ wait = \"sleep\", duration = 1e19 }]",
            "[{ wait = \"banner\", regex = \"(\" }]",
            "{ login = \"5m\" }",
            "{ command = [\"x\"], expect = \"[\" }",
            "1979-05-27",
        ])
        .prop_map(str::to_string),
    ];
    prop_oneof![
        header.prop_map(str::to_string),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        any::<String>(),
    ]
}

/// Loads text as `reimage check` does: parse and validate, then decode
/// every provisioner table.
fn load(text: String) {
    let path = Path::new("fuzz.toml");
    match config::parse(path, text, &provision::BUILTIN, os::families()) {
        Ok(loaded) => {
            for (name, table) in &loaded.config.provisioners {
                let r = config::ProvisionerRef::from_table(name, table);
                if let Err(e) = provision::prepare(&r) {
                    let _ = loaded.key_error(&["provisioners", name], &e);
                }
            }
        }
        Err(e) => assert!(e.0.starts_with("fuzz.toml"), "{}", e.0),
    }
}

/// Lines like xCAT's: `node: value`, `Object name:`, `status=`, errors.
fn xcat_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        any::<String>(),
        "(pc7|pc70|pc)[:  \t]{0,2}[ -~]{0,20}",
        "Object name: (pc7|x)",
        "  status=[ -~]{0,12}",
        "(pc7: )?Error: [ -~]{0,40}",
        prop::sample::select(vec![
            "Error: Could not find an object named 'x' of type 'osimage'.",
            "Error: Invalid nodes and/or groups in noderange: pc7",
            "pc7: no mac address",
            "pc7: on",
            "pc7: Not Activated",
            "\r",
            "",
        ])
        .prop_map(str::to_string),
    ];
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

/// Documents like SOAP's: envelopes, faults, codes, nested subcodes.
fn soap_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        prop::sample::select(vec![
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">",
            "</s:Envelope>",
            "<Envelope>",
            "</Envelope>",
            "<s:Body>",
            "</s:Body>",
            "<Body>",
            "</Body>",
            "<s:Fault>",
            "</s:Fault>",
            "<Fault>",
            "</Fault>",
            "<Code>",
            "</Code>",
            "<Subcode>",
            "</Subcode>",
            "<Value>w:TimedOut</Value>",
            "<Reason><Text>r</Text></Reason>",
            "<faultcode>x:y</faultcode>",
            "<faultstring>s</faultstring>",
            "<Detail/>",
            "<detail>",
            "</detail>",
            "<?xml version=\"1.0\"?>",
            "<!DOCTYPE x>",
            "&amp;",
            "&bogus;",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,10}",
    ];
    prop::collection::vec(part, 0..24).prop_map(|p| p.concat())
}

fn soap(text: &str) {
    if let Ok(doc) = xml::parse(text)
        && let Some(f) = xml::soap_fault(&doc)
    {
        let _ = xml::local_name(&f.code);
        for s in &f.subcodes {
            let _ = xml::local_name(s);
        }
        if let Some(d) = f.detail {
            let _ = xml::text(d);
        }
    }
}

proptest! {
    #[test]
    fn the_config_loader_never_panics_on_text(text in any::<String>()) {
        load(text);
    }

    #[test]
    fn the_config_loader_never_panics_on_config_like_text(
        lines in prop::collection::vec(toml_line(), 0..16),
    ) {
        load(lines.join("\n"));
    }

    #[test]
    fn durations_parse_or_fail_without_panic(s in any::<String>()) {
        if let Ok(d) = duration::parse(&s) {
            prop_assert!(d <= duration::MAX);
        }
    }

    #[test]
    fn duration_like_text_parses_or_fails_without_panic(
        s in "[0-9]{0,25}(\\.[0-9]{0,5})?(e[0-9]{1,3})? ?(ns|us|ms|s|m|h|d|w|M|y|x)?( [0-9]{1,22}(s|m|h))?",
        n in any::<f64>(),
        i in any::<i64>(),
    ) {
        if let Ok(d) = duration::parse(&s) {
            prop_assert!(d <= duration::MAX);
        }
        #[derive(serde::Deserialize)]
        struct C {
            #[allow(dead_code)]
            #[serde(deserialize_with = "duration::de")]
            t: std::time::Duration,
        }
        for text in [format!("t = {n:?}"), format!("t = {i}"), format!("t = {s:?}")] {
            let _ = toml::from_str::<C>(&text);
        }
    }

    #[test]
    fn xcat_output_parsers_never_panic(text in xcat_text(), node in "(pc7|pc|)") {
        use provision::xcat;
        if let Some(v) = xcat::node_value(&text, &node) {
            let _ = xcat::parse_power(&v);
            let _ = xcat::status_word(&v);
        }
        let _ = xcat::lsdef_status(&text, &node);
        if let Some(e) = xcat::find_error(&text) {
            prop_assert!(!e.text().is_empty());
        }
        let _ = xcat::status_word(&text);
        let _ = xcat::parse_power(&text);
    }

    #[test]
    fn soap_documents_never_panic(text in soap_text(), junk in any::<String>()) {
        soap(&text);
        soap(&junk);
    }

    #[test]
    fn kept_output_stays_within_its_bounds(
        s in any::<String>(),
        bytes in 0usize..64,
        lines in 0usize..8,
    ) {
        let (kept, cut) = exec::tail(&s, bytes, lines);
        prop_assert!(kept.len() <= bytes);
        prop_assert_eq!(cut + kept.len(), s.len());
        prop_assert!(kept.trim_end_matches('\n').matches('\n').count() < lines.max(1));
        let b = exec::bounded(&s, bytes, lines);
        prop_assert!(b.ends_with(kept));
        let short = exec::shorten(&s, bytes);
        prop_assert!(short.len() <= bytes + 48, "{}", short.len());
        let e = exec::excerpt(&s, lines);
        prop_assert!(e.len() <= exec::EXCERPT_BYTES + "…".len());
    }
}
