//! Tests of the configuration layers and of the messages for wrong values.

// figment::Jail closures must return figment::Error, a large type we do not choose.
#![allow(clippy::result_large_err)]

use std::path::Path;

use figment::Jail;

use super::*;

fn load(jail: &Jail, toml: &str) -> Result<Config, ConfigError> {
    jail.create_file("ember.toml", toml).expect("write ember.toml");
    Config::load(Some(Path::new("ember.toml")), &Overrides::default())
}

#[test]
fn defaults_are_cinders() {
    let c = Config::load_without_env(None, &Overrides::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.quota_defaults(), QuotaDefaults::default());
    assert_eq!((c.report_interval, c.service_down_time, c.scheduler_max_attempts), (10, 60, 3));
    assert_eq!((c.osapi_volume_listen.as_str(), c.osapi_volume_listen_port), ("127.0.0.1", 8776));
    assert_eq!(c.database_url(), "sqlite://ember-data/ember.db");
    assert_eq!(c.default_availability_zone(), "nova");
    assert_eq!(c.enabled().map(|(n, _)| n).collect::<Vec<_>>(), ["file"]);
    assert_eq!(c.backends["file"].volume_dir("file", &c.data_dir), Path::new("ember-data/volumes/file"));
}

#[test]
fn file_then_environment_then_flags() {
    Jail::expect_with(|jail| {
        let toml = r#"
            quota_volumes = 20
            database_url = "sqlite:///from/file.db"
            enabled_backends = ["file", "fast"]
            [backends.fast]
            volume_driver = "fake"
            volume_backend_name = "fast-pool"
        "#;
        let c = load(jail, toml).map_err(|e| e.to_string())?;
        assert_eq!(c.quota_volumes, 20);
        assert_eq!(c.backends["fast"].volume_driver, VolumeDriverKind::Fake);
        assert_eq!(c.backends["fast"].backend_name("fast"), "fast-pool");
        // The default `file` section is still there for `enabled_backends` to name.
        assert_eq!(c.enabled().count(), 2);

        jail.set_env("EMBER_QUOTA_VOLUMES", "30");
        jail.set_env("EMBER_DATABASE_URL", "sqlite:///from/env.db");
        jail.set_env("EMBER_BACKENDS__FAST__RESERVED_PERCENTAGE", "15");
        jail.set_env("EMBER_LOG", "debug");
        jail.set_env("EMBER_TEST_DATABASE_URL", "postgres://ignored");
        let c = load(jail, toml).map_err(|e| e.to_string())?;
        assert_eq!(c.quota_volumes, 30);
        assert_eq!(c.database_url(), "sqlite:///from/env.db");
        assert_eq!(c.backends["fast"].reserved_percentage, 15.0);

        let flags = Overrides { database_url: Some("sqlite:///from/flag.db".into()), ..Overrides::default() };
        let c = Config::load(Some(Path::new("ember.toml")), &flags).map_err(|e| e.to_string())?;
        assert_eq!(c.database_url(), "sqlite:///from/flag.db");
        Ok(())
    });
}

#[test]
fn a_wrong_value_names_the_option_and_the_file() {
    Jail::expect_with(|jail| {
        let err = load(jail, "quota_volumes = \"ten\"").unwrap_err();
        assert_eq!(err.option, "quota_volumes");
        assert!(err.source_name.ends_with("ember.toml"), "{err}");
        assert!(err.to_string().contains("quota_volumes") && err.to_string().contains("ember.toml"), "{err}");

        let err = load(jail, "[backends.file]\nreserved_percentage = 150").unwrap_err();
        assert_eq!(err.option, "backends.file.reserved_percentage");
        assert!(err.source_name.ends_with("ember.toml"), "{err}");

        let err = load(jail, "quota_volumez = 3").unwrap_err();
        assert!(err.to_string().contains("quota_volumez"), "{err}");

        let err = load(jail, "enabled_backends = [\"lvm\"]").unwrap_err();
        assert_eq!(err.option, "enabled_backends");
        assert!(err.reason.contains("[backends.lvm]"), "{err}");

        let err = load(jail, "service_down_time = 5").unwrap_err();
        assert_eq!(err.option, "service_down_time");

        let err = load(jail, "[backends.file]\nvolume_driver = \"lvm\"").unwrap_err();
        assert_eq!(err.option, "backends.file.volume_driver");

        jail.set_env("EMBER_QUOTA_GIGABYTES", "-5");
        let err = load(jail, "").unwrap_err();
        assert_eq!(err.option, "quota_gigabytes");
        assert!(err.source_name.contains("EMBER_"), "{err}");
        Ok(())
    });
}

#[test]
fn export_options_default_to_nbd_and_iscsi_needs_raw_volumes() {
    Jail::expect_with(|jail| {
        let c = load(jail, "").unwrap();
        let file = &c.backends["file"];
        assert_eq!(file.target_protocol, TargetProtocol::Nbd);
        assert_eq!((file.target_ip_address.as_str(), file.target_port), ("127.0.0.1", 3260));
        assert_eq!(file.target_prefix, "iqn.2010-10.org.openstack:");

        let iscsi = "[backends.file]\ntarget_protocol = \"iscsi\"\ntarget_helper = \"tgtadm\"\n";
        let c = load(jail, &format!("{iscsi}file_volume_format = \"raw\"\ntgt_control_port = 7")).unwrap();
        assert_eq!(c.backends["file"].target_protocol, TargetProtocol::Iscsi);
        assert_eq!(c.backends["file"].target_helper, Some(TargetHelper::Tgtadm));
        assert_eq!(c.backends["file"].tgt_control_port, 7);

        let err = load(jail, iscsi).unwrap_err();
        assert_eq!(err.option, "backends.file.target_protocol");
        assert!(err.reason.contains("raw"), "{err}");
        let err = load(jail, "[backends.file]\ntarget_helper = \"tgtadm\"").unwrap_err();
        assert_eq!(err.option, "backends.file.target_helper");
        // The NBD helper, under its name and the name of the tool used before.
        for helper in ["qemu-storage-daemon", "qemu-nbd"] {
            let c = load(jail, &format!("[backends.file]\ntarget_helper = \"{helper}\"")).unwrap();
            assert_eq!(c.backends["file"].target_helper, Some(TargetHelper::QemuStorageDaemon));
        }
        let err = load(jail, "[backends.file]\ntarget_protocol = \"fc\"").unwrap_err();
        assert_eq!(err.option, "backends.file.target_protocol");
        let err = load(jail, "[backends.file]\ntarget_ip_address = \"my host\"").unwrap_err();
        assert_eq!(err.option, "backends.file.target_ip_address");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_an_error() {
    let err = Config::load_without_env(Some(Path::new("/nonexistent/ember.toml")), &Overrides::default());
    assert!(err.unwrap_err().to_string().contains("/nonexistent/ember.toml"));
}

#[test]
fn the_example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/ember.toml");
    let c = Config::load_without_env(Some(&path), &Overrides::default()).unwrap();
    assert_eq!(c.quota_volumes, 10);
    assert!(c.backends.contains_key("file"));
}

#[test]
fn token_auth_takes_its_tokens_from_the_file_and_needs_at_least_one() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tokens.toml",
            "auth_strategy = \"token\"\n[tokens.\"s3cret\"]\nuser_id = \"alice\"\nproject_id = \"demo\"\nroles = [\"admin\"]\n",
        )?;
        let c = Config::load_without_env(Some(Path::new("tokens.toml")), &Overrides::default())
            .expect("a token configuration loads");
        assert_eq!(c.auth_strategy, AuthStrategy::Token);
        assert_eq!(c.tokens["s3cret"].project_id, "demo");
        assert_eq!(c.tokens["s3cret"].roles, ["admin"]);
        jail.create_file("none.toml", "auth_strategy = \"token\"\n")?;
        let err = Config::load_without_env(Some(Path::new("none.toml")), &Overrides::default())
            .expect_err("token auth without tokens is refused");
        assert!(err.to_string().contains("auth_strategy"), "{err}");
        Ok(())
    });
}

#[test]
fn keystone_auth_reads_keystonemiddleware_options_and_needs_the_service_user() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "ks.toml",
            "auth_strategy = \"keystone\"\n[keystone_authtoken]\nauth_url = \"http://127.0.0.1:5000/v3\"\n\
             www_authenticate_uri = \"http://keystone.example:5000\"\nusername = \"ember\"\n\
             password = \"pw\"\nproject_name = \"service\"\ntoken_cache_time = 60\n\
             [oslo_policy]\npolicy_file = \"/etc/ember/policy.yaml\"\n",
        )?;
        let c = Config::load_without_env(Some(Path::new("ks.toml")), &Overrides::default())
            .expect("a keystone configuration loads");
        assert_eq!(c.auth_strategy, AuthStrategy::Keystone);
        let ks = &c.keystone_authtoken;
        assert_eq!(ks.username.as_deref(), Some("ember"));
        assert_eq!((ks.token_cache_time, ks.user_domain_name.as_str()), (60, "Default"));
        assert_eq!(ks.service_token_roles, ["service"]);
        assert_eq!(c.oslo_policy.policy_file.as_deref(), Some(Path::new("/etc/ember/policy.yaml")));
        jail.create_file("nopw.toml", "auth_strategy = \"keystone\"\n[keystone_authtoken]\nauth_url = \"http://k\"\nusername = \"ember\"\n")?;
        let err = Config::load_without_env(Some(Path::new("nopw.toml")), &Overrides::default())
            .expect_err("keystone auth without a password is refused");
        assert!(err.to_string().contains("keystone_authtoken.password"), "{err}");
        jail.create_file("typo.toml", "[keystone_authtoken]\nauth_uri = \"http://k\"\n")?;
        let err = Config::load_without_env(Some(Path::new("typo.toml")), &Overrides::default())
            .expect_err("an unknown keystone option is refused");
        assert!(err.to_string().contains("auth_uri"), "{err}");
        Ok(())
    });
}

#[test]
fn fault_deadlines_are_read_and_checked() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", "database_pool_timeout = 2\n[backends.file]\nqemu_img_timeout = 7\n")?;
        let c = Config::load_without_env(Some(Path::new("t.toml")), &Overrides::default()).unwrap();
        assert_eq!(c.database_pool_timeout, 2);
        assert_eq!(c.backends["file"].qemu_img_timeout, 7);
        assert_eq!(c.backends["file"].tgtadm_timeout, 30);
        jail.create_file("bad.toml", "[backends.file]\ntgtadm_timeout = 0\n")?;
        let err = Config::load_without_env(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("tgtadm_timeout"), "{err}");
        Ok(())
    });
}
