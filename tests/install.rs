//! `micro::install()` and the engine features: `MICRO_REGISTRY=etcd://…` works with feature
//! `etcd` and fails naming the feature without it; `service://…` likewise with `platform`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn install_lets_registry_urls_name_the_engines_compiled_in() {
    micro::install();
    // Idempotent.
    micro::install();
    let result = micro::registry::from_url("etcd://127.0.0.1:1?namespace=install");
    #[cfg(feature = "etcd")]
    {
        // Opening does not connect.
        let registry = result.unwrap();
        assert_eq!(registry.name(), "etcd://127.0.0.1:1?namespace=install");
        let _: &micro::plugins::etcd::EtcdRegistry =
            &micro::plugins::etcd::from_url("etcd://127.0.0.1:1").unwrap();
    }
    #[cfg(not(feature = "etcd"))]
    {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                micro::RegistryError::EngineNotInstalled {
                    feature: "etcd",
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("features = [\"etcd\"]"), "{message}");
    }
}

#[test]
fn service_urls_need_the_platform_feature() {
    micro::install();
    let result = micro::registry::from_url("service://127.0.0.1:1");
    #[cfg(feature = "platform")]
    {
        // Opening does not connect.
        let registry = result.unwrap();
        assert!(
            registry.name().contains("127.0.0.1:1"),
            "{}",
            registry.name()
        );
    }
    #[cfg(not(feature = "platform"))]
    {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                micro::RegistryError::EngineNotInstalled {
                    feature: "platform",
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("features = [\"platform\"]"), "{message}");
    }
}
