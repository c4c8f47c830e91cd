//! `uniffi-bindgen`, built from the same uniffi version as `tether-ffi`, so that generated Swift,
//! Kotlin and Python always match the library's metadata. See `bindings/generate.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
