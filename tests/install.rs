//! `micro::install()` and the engine features: `MICRO_REGISTRY=etcd://…` works with feature
//! `etcd` and fails naming the feature without it.

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
