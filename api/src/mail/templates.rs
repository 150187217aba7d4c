//! Mail templates, embedded in the binary: a subject, a text part and an HTML part each.

use minijinja::{AutoEscape, Environment};

/// (name, subject, text, html), from `templates/<name>.{subject.txt,txt,html}`.
macro_rules! template {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("templates/", $name, ".subject.txt")),
            include_str!(concat!("templates/", $name, ".txt")),
            include_str!(concat!("templates/", $name, ".html")),
        )
    };
}

/// (name, subject, text, html). Mails that are not strictly necessary put an
/// `unsubscribe_url` in their context and get the one-click unsubscribe headers.
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    template!("operator_test"),
    template!("verify_email"),
    template!("reset_password"),
    template!("password_changed"),
    template!("payment_receipt"),
    template!("low_balance"),
    template!("api_key_created"),
    template!("export_ready"),
    template!("account_deleted"),
    template!("support_request"),
    template!("support_copy"),
    template!("new_sign_in"),
    template!("policy_changed"),
];

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    for (name, subject, text, html) in TEMPLATES {
        env.add_template_owned(format!("{name}.subject"), *subject)
            .expect("subject template parses");
        env.add_template_owned(format!("{name}.txt"), *text)
            .expect("text template parses");
        env.add_template_owned(format!("{name}.html"), *html)
            .expect("html template parses");
    }
    env
}

pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|t| t.0).collect()
}

pub fn render(name: &str, context: &serde_json::Value) -> anyhow::Result<Rendered> {
    if !TEMPLATES.iter().any(|t| t.0 == name) {
        anyhow::bail!("unknown mail template '{name}'");
    }
    let env = environment();
    let part = |suffix: &str| -> anyhow::Result<String> {
        Ok(env
            .get_template(&format!("{name}.{suffix}"))?
            .render(context)?)
    };
    let mut headers = serde_json::Map::new();
    // Header values come from the context; a line break would inject headers.
    let header_value = |key: &str| -> anyhow::Result<Option<&str>> {
        match context.get(key).and_then(|v| v.as_str()) {
            Some(v) if v.contains(['\r', '\n']) => anyhow::bail!("line break in mail header {key}"),
            other => Ok(other),
        }
    };
    if let Some(reply_to) = header_value("reply_to")? {
        headers.insert("Reply-To".into(), reply_to.into());
    }
    if let Some(url) = header_value("unsubscribe_url")? {
        headers.insert("List-Unsubscribe".into(), format!("<{url}>").into());
        headers.insert(
            "List-Unsubscribe-Post".into(),
            "List-Unsubscribe=One-Click".into(),
        );
    }
    Ok(Rendered {
        subject: part("subject")?.trim().to_string(),
        text: part("txt")?,
        html: part("html")?,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_context() -> serde_json::Value {
        serde_json::json!({ "sent_at": "<b>now</b>", "name": "<b>Ada</b>", "link": "https://spa.test/x?token=t",
                            "hours": 48, "minutes": 60, "ip": "127.0.0.1",
                            "amount": "5.00 USD", "credits": 100, "item": "pack_100", "provider": "stripe", "reference": "cs_1", "date": "2026-11-29", "available": 3,
                            "key_name": "<b>CI</b>", "prefix": "gi2_abcdefgh",
                            "expires_on": "2026-12-06 12:00 UTC",
                            "user_id": "0190f5a4-0000-7000-8000-000000000000", "email": "ada@example.com",
                            "subject": "<b>Help</b>", "message": "line one\nline <b>two</b>",
                            "time": "2026-11-29 12:00 UTC", "user_agent": "<b>Firefox</b>", "method": "password",
                            "version": "2027-01", "summary": "<b>shorter</b>", "url": "https://gptimage2.dev/legal/privacy",
                            "settings_url": "https://spa.test/settings/notifications" })
    }

    #[test]
    fn every_template_renders_and_escapes_html() {
        for name in names() {
            let out = render(name, &sample_context()).unwrap();
            assert!(!out.subject.is_empty() && !out.subject.contains('\n'));
            assert!(
                out.text.contains("<b>Ada</b>") || out.text.contains("<b>now</b>"),
                "text part is not escaped"
            );
            assert!(!out.html.contains("<b>"), "html part is escaped");
        }
        assert!(
            render("operator_test", &serde_json::json!({})).is_err(),
            "missing variables fail loudly"
        );
        assert!(render("nope", &serde_json::json!({})).is_err());
    }

    #[test]
    fn context_headers_are_set_and_cannot_inject() {
        let mut context = sample_context();
        context["reply_to"] = "ada@example.com".into();
        context["unsubscribe_url"] = "https://api.test/v1/mail/unsubscribe?token=t".into();
        let out = render("support_request", &context).unwrap();
        assert_eq!(out.headers["Reply-To"], "ada@example.com");
        assert_eq!(
            out.headers["List-Unsubscribe"],
            "<https://api.test/v1/mail/unsubscribe?token=t>"
        );
        assert_eq!(
            out.headers["List-Unsubscribe-Post"],
            "List-Unsubscribe=One-Click"
        );
        context["reply_to"] = "ada@example.com\r\nBcc: all@example.com".into();
        assert!(render("support_request", &context).is_err());
    }
}
