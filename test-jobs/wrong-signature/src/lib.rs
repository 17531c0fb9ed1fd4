//! Test fixture: a component whose exports have the `sundial:job` names but
//! the wrong types. The loader must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package sundial:job@0.1.0;
        world job {
            export describe: func() -> string;
            export run: func(input: string) -> string;
            export items: func(cursor: string) -> string;
            export run-item: func(item: string) -> string;
        }
    "#,
});

struct Wrong;

impl Guest for Wrong {
    fn describe() -> String {
        "wrong-signature".into()
    }
    fn run(input: String) -> String {
        input
    }
    fn items(cursor: String) -> String {
        cursor
    }
    fn run_item(item: String) -> String {
        item
    }
}

export!(Wrong);
