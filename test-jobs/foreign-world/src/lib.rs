//! Test fixture: a component for another world (`acme:other/plugin`), with
//! none of the `sundial:job` exports. The loader must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package acme:other@1.0.0;
        world plugin {
            export greet: func(name: string) -> string;
        }
    "#,
});

struct Plugin;

impl Guest for Plugin {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Plugin);
