//! Route templates for the request table: `/api/v1/agents/{slug}/invoke`
//! rather than the path as sent. Only words of the Castari API's routes
//! are kept; any other segment becomes a placeholder, so no id, slug or
//! session name reaches the page.

/// Words that name a collection whose next segment is an id, and the
/// placeholder shown for it.
const COLLECTIONS: &[(&str, &str)] = &[
    ("agents", "{slug}"),
    ("buckets", "{slug}"),
    ("files", "{id}"),
    ("sessions", "{id}"),
    ("secrets", "{key}"),
    ("mounts", "{id}"),
    ("api-keys", "{id}"),
    ("sandbox", "{id}"),
    ("invocations", "{id}"),
    ("agent", "{slug}"),
    ("session", "{id}"),
];

/// Words of the API's routes that are not ids.
const WORDS: &[&str] = &[
    "access",
    "agent",
    "agents",
    "api-key",
    "api-keys",
    "auth",
    "buckets",
    "confirm-upload",
    "content",
    "credentials",
    "daily",
    "deploy",
    "download",
    "download-url",
    "files",
    "invocations",
    "invoke",
    "me",
    "mounts",
    "redeploy",
    "sandbox",
    "secrets",
    "session",
    "sessions",
    "stop",
    "stream",
    "sync",
    "test",
    "upload-code",
    "upload-url",
    "usage",
];

/// Actions on the `files` collection, not file ids.
const FILE_ACTIONS: &[&str] = &["upload-url", "confirm-upload", "usage", "agent", "session"];

/// The template of `path` (an `/api/v1/...` path as sent, no query).
pub fn of(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/api/v1") else {
        return "(other)".into();
    };
    let mut out = String::from("/api/v1");
    let mut previous = "";
    for segment in rest.split('/').skip(1) {
        out.push('/');
        let placeholder = COLLECTIONS
            .iter()
            .find(|(word, _)| *word == previous)
            .map(|(_, placeholder)| *placeholder)
            .filter(|_| !(previous == "files" && FILE_ACTIONS.contains(&segment)))
            .filter(|_| !segment.is_empty());
        let shown = match placeholder {
            Some(placeholder) => placeholder,
            None if WORDS.contains(&segment) || segment.is_empty() => segment,
            None => "{id}",
        };
        out.push_str(shown);
        // Only a word opens a collection: `/agents/agents/x` is the agent
        // `agents` and then an id.
        previous = if placeholder.is_some() { "" } else { shown };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders_and_route_words_stay() {
        let cases = [
            ("/api/v1/agents", "/api/v1/agents"),
            ("/api/v1/agents/my-bot", "/api/v1/agents/{slug}"),
            (
                "/api/v1/agents/my-bot/invoke",
                "/api/v1/agents/{slug}/invoke",
            ),
            (
                "/api/v1/agents/deploy/deploy",
                "/api/v1/agents/{slug}/deploy",
            ),
            (
                "/api/v1/agents/a/sessions/s-123",
                "/api/v1/agents/{slug}/sessions/{id}",
            ),
            (
                "/api/v1/agents/a/secrets/API_TOKEN",
                "/api/v1/agents/{slug}/secrets/{key}",
            ),
            ("/api/v1/files/upload-url", "/api/v1/files/upload-url"),
            ("/api/v1/files/f_1/content", "/api/v1/files/{id}/content"),
            ("/api/v1/files/session/s1", "/api/v1/files/session/{id}"),
            ("/api/v1/usage/daily", "/api/v1/usage/daily"),
            ("/api/v1/whatever/secret-ish", "/api/v1/{id}/{id}"),
            ("/api/v1/agents/", "/api/v1/agents/"),
            ("/healthz", "(other)"),
        ];
        for (path, template) in cases {
            assert_eq!(of(path), template, "{path}");
        }
    }
}
