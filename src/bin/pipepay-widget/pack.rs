//! The widget archive Kommo needs to list pipepay in its Marketplace.
//!
//! [`pack`] checks a widget folder against the rules Kommo applies when the archive is
//! uploaded and moderated, then writes a zip that is the same, byte for byte, every time
//! it is built from the same folder. The rules come from Kommo's developer docs:
//! <https://developers.kommo.com/docs/structure-widget>, `/docs/manifest-json`, `/docs/i18n`,
//! `/docs/images` and the listing checklist `/docs/getting-listed`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// The files in the archive, by their path inside it, sorted.
    pub files: Vec<String>,
    /// The size of the archive.
    pub bytes: u64,
}

/// Why a widget folder cannot be packed. Every variant names the offending file by its
/// path inside the archive (`images/logo.png`), or by its full path when it is the
/// folder itself or the output.
#[derive(Debug, thiserror::Error)]
pub enum WidgetError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: hidden files are not allowed in a Kommo widget archive")]
    Hidden { file: String },
    #[error(
        "{file}: not part of a Kommo widget; the archive may hold only manifest.json, script.js, \
         style.css, i18n/*.json, images/* and templates/*.twig"
    )]
    Unexpected { file: String },
    #[error("{file}: not a regular file; links and special files cannot go into the archive")]
    NotRegular { file: String },
    #[error("{file}: the file name is not valid UTF-8")]
    BadName { file: String },
    #[error("{file}: missing; Kommo requires it")]
    Missing { file: String },
    #[error("{file}: starts with a byte-order mark; Kommo requires UTF-8 without BOM")]
    Bom { file: String },
    #[error("{file}: not valid UTF-8 at byte {offset}; Kommo requires UTF-8 text")]
    NotUtf8 { file: String, offset: usize },
    #[error("{file}: line {line} ends with a carriage return; Kommo requires LF line endings")]
    LineEnding { file: String, line: usize },
    #[error("{file}: not valid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {problem}")]
    Manifest { file: String, problem: String },
    #[error("{file}: missing; manifest.json declares the locale `{locale}`, which needs it")]
    MissingLocale { file: String, locale: String },
    #[error("{file}: the locale `{locale}` is not in manifest.json `widget.locale`, so the file is unused")]
    UndeclaredLocale { file: String, locale: String },
    #[error("{file}: must be a JSON object of texts")]
    I18nShape { file: String },
    #[error(
        "{file}: the key `{key}` {problem} {reference}; Kommo requires the same structure in every i18n file"
    )]
    I18nStructure { file: String, key: String, problem: &'static str, reference: String },
    #[error("{file}: no text for `{key}`, which manifest.json refers to")]
    MissingKey { file: String, key: String },
    #[error("{file}: `{key}` {problem}")]
    ListingText { file: String, key: String, problem: String },
    #[error("{file}: line {line}: {problem} (Kommo's code rules)")]
    Script { file: String, line: usize, problem: String },
    #[error("{file}: not a PNG image (no PNG signature followed by an IHDR chunk)")]
    NotPng { file: String },
    #[error("{file}: is {width}×{height} px; Kommo requires exactly {expected_width}×{expected_height} px")]
    ImageSize { file: String, width: u32, height: u32, expected_width: u32, expected_height: u32 },
    #[error("{file}: {bytes} bytes is over Kommo's limit of 300 KB per image")]
    ImageTooLarge { file: String, bytes: u64 },
    #[error("{file}: cannot build the archive: {source}")]
    Zip {
        file: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{file}: cannot write the archive: {source}")]
    Write {
        file: String,
        #[source]
        source: io::Error,
    },
}

impl WidgetError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            Self::Read { file, .. }
            | Self::Hidden { file }
            | Self::Unexpected { file }
            | Self::NotRegular { file }
            | Self::BadName { file }
            | Self::Missing { file }
            | Self::Bom { file }
            | Self::NotUtf8 { file, .. }
            | Self::LineEnding { file, .. }
            | Self::Json { file, .. }
            | Self::Manifest { file, .. }
            | Self::MissingLocale { file, .. }
            | Self::UndeclaredLocale { file, .. }
            | Self::I18nShape { file }
            | Self::I18nStructure { file, .. }
            | Self::MissingKey { file, .. }
            | Self::ListingText { file, .. }
            | Self::Script { file, .. }
            | Self::NotPng { file }
            | Self::ImageSize { file, .. }
            | Self::ImageTooLarge { file, .. }
            | Self::Zip { file, .. }
            | Self::Write { file, .. } => file,
        }
    }
}

/// The host of the placeholder links shipped in the widget source (`https://pipepay.example`,
/// `support@pipepay.example`). Kommo requires the support link to work, so an operator
/// replaces them before uploading; [`placeholder_files`] says where they still are.
pub const PLACEHOLDER_HOST: &str = "pipepay.example";

/// Kommo's ceiling per image is "300 KB"; counted in decimal kilobytes so an image passes
/// whichever unit Kommo means.
pub const MAX_IMAGE_BYTES: u64 = 300 * 1000;

const MANIFEST: &str = "manifest.json";

/// Kommo's widget languages; each needs its own `i18n/<code>.json`.
const LOCALES: [&str; 5] = ["en", "es", "pt", "tr", "id"];

/// Kommo's image table: every widget ships these, at exactly these sizes.
const IMAGES: [(&str, u32, u32); 5] = [
    ("images/logo_main.png", 400, 272),
    ("images/logo_medium.png", 240, 84),
    ("images/logo_min.png", 84, 84),
    ("images/logo.png", 130, 100),
    ("images/logo_small.png", 108, 108),
];

/// Needed only by widgets in the digital pipeline.
const DP_IMAGE: (&str, u32, u32) = ("images/logo_dp.png", 174, 109);

const LOCATIONS: [&str; 19] = [
    "lcard",
    "ccard",
    "comcard",
    "llist",
    "clist",
    "tlist",
    "settings",
    "advanced_settings",
    "card_sdk",
    "catalogs",
    "digital_pipeline",
    "lead_sources",
    "widget_page",
    "sms",
    "mobile_card",
    "salesbot_designer",
    "website_chat_button",
    "ai_agent",
    "everywhere",
];

const SETTING_TYPES: [&str; 5] = ["text", "pass", "users", "users_lp", "custom"];

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Validates the widget folder against Kommo's rules and writes a zip with every file at the root.
/// (The command always packs with [`pack_for`]; the tests pack the folder as shipped.)
///
/// Nothing is written unless the whole folder passes. The archive holds the bytes that were
/// validated, in sorted order, with fixed timestamps and permissions.
#[cfg(test)]
pub fn pack(source: &Path, out: &Path) -> Result<PackReport, WidgetError> {
    let files = validate(read_folder(source)?)?;
    write_archive(files, out)
}

/// Like [`pack`], with the placeholder links replaced by this deployment's: the archive is
/// static, so pipepay's public URL and support address are written into it when packing.
pub fn pack_for(
    source: &Path,
    out: &Path,
    public_url: &str,
    support_email: &str,
) -> Result<PackReport, WidgetError> {
    let mut files = read_folder(source)?;
    for (name, bytes) in files.iter_mut() {
        if is_image(name) {
            continue;
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            let replaced = text
                .replace(&format!("https://{PLACEHOLDER_HOST}"), public_url.trim_end_matches('/'))
                .replace(&format!("support@{PLACEHOLDER_HOST}"), support_email);
            *bytes = replaced.into_bytes();
        }
    }
    write_archive(validate(files)?, out)
}

fn write_archive(files: BTreeMap<String, Vec<u8>>, out: &Path) -> Result<PackReport, WidgetError> {
    let archive = build_zip(&files).map_err(|source| WidgetError::Zip { file: display(out), source })?;
    write_atomically(out, &archive)?;
    Ok(PackReport {
        files: files.keys().cloned().collect(),
        bytes: u64::try_from(archive.len()).unwrap_or(u64::MAX),
    })
}

/// The text files of the widget folder that still carry a [`PLACEHOLDER_HOST`] link, sorted.
#[cfg(test)]
pub fn placeholder_files(source: &Path) -> Result<Vec<String>, WidgetError> {
    let files = read_folder(source)?;
    Ok(files
        .into_iter()
        .filter(|(name, bytes)| !is_image(name) && String::from_utf8_lossy(bytes).contains(PLACEHOLDER_HOST))
        .map(|(name, _)| name)
        .collect())
}

fn validate(files: BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, Vec<u8>>, WidgetError> {
    let mut texts = BTreeMap::new();
    for (name, bytes) in &files {
        if !is_image(name) {
            texts.insert(name.as_str(), check_text(name, bytes)?);
        }
    }

    let manifest_text = texts.get(MANIFEST).ok_or_else(|| WidgetError::Missing { file: MANIFEST.into() })?;
    let manifest = parse_json(MANIFEST, manifest_text)?;
    let manifest = check_manifest(&manifest)?;

    check_i18n(&manifest, &texts)?;
    check_images(&manifest, &files)?;
    for (name, text) in &texts {
        if name.ends_with(".js") {
            check_script(name, text)?;
        }
    }
    Ok(files)
}

/// Reads every file of the folder, keyed by its path inside the archive, and refuses
/// anything Kommo would not accept or that would go unused.
fn read_folder(source: &Path) -> Result<BTreeMap<String, Vec<u8>>, WidgetError> {
    let mut files = BTreeMap::new();
    for (name, path) in list(source, None)? {
        let bytes = fs::read(&path).map_err(|source| WidgetError::Read { file: name.clone(), source })?;
        files.insert(name, bytes);
    }
    Ok(files)
}

/// The files under `dir`, one level of folders deep, as (archive path, disk path).
fn list(dir: &Path, parent: Option<&str>) -> Result<Vec<(String, PathBuf)>, WidgetError> {
    let here = parent.map_or_else(|| display(dir), |parent| format!("{parent}/"));
    let mut entries = fs::read_dir(dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(|source| WidgetError::Read { file: here.clone(), source })?;
    // Sorted, so that of several problems the same one is reported on every machine.
    entries.sort_by_key(fs::DirEntry::file_name);
    let mut found = Vec::new();
    for entry in entries {
        let raw = entry.file_name();
        let name = match (parent, raw.to_str()) {
            (None, Some(name)) => name.to_owned(),
            (Some(parent), Some(name)) => format!("{parent}/{name}"),
            (_, None) => {
                let lossy = raw.to_string_lossy();
                let file = parent.map_or_else(|| lossy.to_string(), |parent| format!("{parent}/{lossy}"));
                return Err(WidgetError::BadName { file });
            }
        };
        // Kommo's checklist forbids unused files; editor and OS droppings are the usual ones.
        if raw.to_string_lossy().starts_with('.') {
            return Err(WidgetError::Hidden { file: name });
        }
        let path = entry.path();
        let kind = fs::symlink_metadata(&path)
            .map_err(|source| WidgetError::Read { file: name.clone(), source })?
            .file_type();
        if kind.is_dir() {
            if parent.is_none() && matches!(name.as_str(), "i18n" | "images" | "templates") {
                found.extend(list(&path, Some(&name))?);
            } else {
                return Err(WidgetError::Unexpected { file: format!("{name}/") });
            }
        } else if !kind.is_file() {
            return Err(WidgetError::NotRegular { file: name });
        } else if allowed(&name) {
            found.push((name, path));
        } else {
            return Err(WidgetError::Unexpected { file: name });
        }
    }
    Ok(found)
}

/// The files Kommo documents for a widget archive.
fn allowed(name: &str) -> bool {
    match name.split_once('/') {
        None => matches!(name, "manifest.json" | "script.js" | "style.css"),
        Some(("i18n", file)) => file.ends_with(".json"),
        Some(("images", _)) => true,
        Some(("templates", file)) => file.ends_with(".twig"),
        Some(_) => false,
    }
}

fn is_image(name: &str) -> bool {
    name.starts_with("images/")
}

/// Kommo's code rules: UTF-8 without BOM, LF line endings.
fn check_text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, WidgetError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(WidgetError::Bom { file: name.into() });
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|error| WidgetError::NotUtf8 { file: name.into(), offset: error.valid_up_to() })?;
    if let Some(at) = text.find('\r') {
        let line = text[..at].matches('\n').count() + 1;
        return Err(WidgetError::LineEnding { file: name.into(), line });
    }
    Ok(text)
}

fn parse_json(name: &str, text: &str) -> Result<Value, WidgetError> {
    serde_json::from_str(text).map_err(|source| WidgetError::Json { file: name.into(), source })
}

/// What the rest of the checks need from manifest.json.
struct Manifest {
    locales: Vec<String>,
    locations: Vec<String>,
    /// The i18n keys the manifest refers to, as (manifest field, key).
    keys: Vec<(String, String)>,
}

fn manifest_error(problem: impl Into<String>) -> WidgetError {
    WidgetError::Manifest { file: MANIFEST.into(), problem: problem.into() }
}

fn check_manifest(manifest: &Value) -> Result<Manifest, WidgetError> {
    let root = manifest.as_object().ok_or_else(|| manifest_error("must be a JSON object"))?;
    let widget = root
        .get("widget")
        .and_then(Value::as_object)
        .ok_or_else(|| manifest_error("`widget` is missing or not an object"))?;

    let mut keys = Vec::new();
    for field in ["name", "description", "short_description"] {
        match widget.get(field).and_then(Value::as_str) {
            Some(key) if !key.is_empty() => keys.push((format!("widget.{field}"), key.to_owned())),
            _ => return Err(manifest_error(format!("`widget.{field}` is missing or not an i18n key"))),
        }
    }

    match widget.get("interface_version") {
        Some(version) if version.as_u64() == Some(2) => {}
        Some(version) => {
            return Err(manifest_error(format!("`widget.interface_version` must be 2, found {version}")));
        }
        None => return Err(manifest_error("`widget.interface_version` is missing; Kommo requires 2")),
    }

    let locales = string_list(widget.get("locale"), "widget.locale")?;
    for locale in &locales {
        if !LOCALES.contains(&locale.as_str()) {
            return Err(manifest_error(format!(
                "`widget.locale` has `{locale}`; Kommo widgets support {}",
                LOCALES.join(", ")
            )));
        }
    }

    let installation = widget
        .get("installation")
        .and_then(Value::as_bool)
        .ok_or_else(|| manifest_error("`widget.installation` is missing or not true/false"))?;

    if let Some(support) = widget.get("support")
        && !support.is_object()
    {
        return Err(manifest_error("`widget.support` must be an object with `link` and `email`"));
    }

    let locations = string_list(root.get("locations"), "locations")?;
    for location in &locations {
        check_location(location)?;
    }

    // Kommo shows the settings form at install when `installation` is true, and needs
    // something to show.
    match root.get("settings") {
        Some(settings) => keys.extend(setting_keys(settings, "settings")?),
        None if installation => {
            return Err(manifest_error("`settings` is required when `widget.installation` is true"));
        }
        None => {}
    }

    // Kommo's digital-pipeline action is configured through the `dp` block.
    if locations.iter().any(|location| location == "digital_pipeline") {
        let dp = root
            .get("dp")
            .and_then(Value::as_object)
            .ok_or_else(|| manifest_error("the `digital_pipeline` location needs a `dp` block"))?;
        if let Some(settings) = dp.get("settings") {
            keys.extend(setting_keys(settings, "dp.settings")?);
        }
        if !dp.get("action_multiple").is_some_and(Value::is_boolean) {
            return Err(manifest_error(
                "`dp.action_multiple` is missing or not true/false; Kommo requires it",
            ));
        }
        match dp.get("webhook_url").and_then(Value::as_str) {
            Some(url) if url.starts_with("https://") => {}
            _ => return Err(manifest_error("`dp.webhook_url` must be the https:// address Kommo calls")),
        }
    } else if root.contains_key("dp") {
        return Err(manifest_error("a `dp` block needs the `digital_pipeline` location"));
    }

    for (field, path) in
        [("advanced.title", ["advanced", "title"]), ("tour.tour_description", ["tour", "tour_description"])]
    {
        if let Some(value) = root.get(path[0]).and_then(|block| block.get(path[1])) {
            let key =
                value.as_str().ok_or_else(|| manifest_error(format!("`{field}` must be an i18n key")))?;
            keys.push((field.to_owned(), key.to_owned()));
        }
    }

    Ok(Manifest { locales, locations, keys })
}

fn string_list(value: Option<&Value>, field: &str) -> Result<Vec<String>, WidgetError> {
    let items = value
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or_else(|| manifest_error(format!("`{field}` is missing or not a non-empty list")))?;
    let mut seen = BTreeSet::new();
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        let text =
            item.as_str().ok_or_else(|| manifest_error(format!("`{field}` must hold strings only")))?;
        if !seen.insert(text) {
            return Err(manifest_error(format!("`{field}` lists `{text}` twice")));
        }
        list.push(text.to_owned());
    }
    Ok(list)
}

/// Kommo's location names, with the optional `-0`/`-1` right-column suffix.
fn check_location(location: &str) -> Result<(), WidgetError> {
    let (base, suffixed) = match location.strip_suffix("-0").or_else(|| location.strip_suffix("-1")) {
        Some(base) => (base, true),
        None => (location, false),
    };
    if !LOCATIONS.contains(&base) {
        return Err(manifest_error(format!("`locations` has `{location}`, which is not a Kommo location")));
    }
    if suffixed && base == "everywhere" {
        return Err(manifest_error("the `everywhere` location takes no `-0`/`-1` suffix"));
    }
    Ok(())
}

/// Checks a `{CODE: {name, type, required}}` settings block and returns its i18n keys.
fn setting_keys(settings: &Value, field: &str) -> Result<Vec<(String, String)>, WidgetError> {
    let settings = settings
        .as_object()
        .filter(|settings| !settings.is_empty())
        .ok_or_else(|| manifest_error(format!("`{field}` must be a non-empty object of fields")))?;
    let mut keys = Vec::with_capacity(settings.len());
    for (code, setting) in settings {
        let at = format!("{field}.{code}");
        let name = setting
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| manifest_error(format!("`{at}.name` is missing or not an i18n key")))?;
        match setting.get("type").and_then(Value::as_str) {
            Some(kind) if SETTING_TYPES.contains(&kind) => {}
            _ => {
                return Err(manifest_error(format!(
                    "`{at}.type` must be one of {}",
                    SETTING_TYPES.join(", ")
                )));
            }
        }
        if !setting.get("required").is_some_and(Value::is_boolean) {
            return Err(manifest_error(format!("`{at}.required` is missing or not true/false")));
        }
        keys.push((format!("{at}.name"), name.to_owned()));
    }
    Ok(keys)
}

fn check_i18n(manifest: &Manifest, texts: &BTreeMap<&str, &str>) -> Result<(), WidgetError> {
    for name in texts.keys() {
        if let Some(locale) = name.strip_prefix("i18n/").and_then(|file| file.strip_suffix(".json"))
            && !manifest.locales.iter().any(|declared| declared == locale)
        {
            return Err(WidgetError::UndeclaredLocale { file: (*name).into(), locale: locale.into() });
        }
    }

    let mut reference: Option<(String, BTreeSet<String>)> = None;
    for locale in &manifest.locales {
        let file = format!("i18n/{locale}.json");
        let text = texts
            .get(file.as_str())
            .ok_or_else(|| WidgetError::MissingLocale { file: file.clone(), locale: locale.clone() })?;
        let value = parse_json(&file, text)?;
        if !value.is_object() {
            return Err(WidgetError::I18nShape { file });
        }

        let mut leaves = BTreeSet::new();
        collect_leaves(&value, "", &mut leaves);
        match &reference {
            None => reference = Some((file.clone(), leaves)),
            Some((reference_file, reference_leaves)) => {
                let structure = |key: &String, problem| WidgetError::I18nStructure {
                    file: file.clone(),
                    key: key.clone(),
                    problem,
                    reference: reference_file.clone(),
                };
                if let Some(key) = reference_leaves.difference(&leaves).next() {
                    return Err(structure(key, "is missing here but present in"));
                }
                if let Some(key) = leaves.difference(reference_leaves).next() {
                    return Err(structure(key, "is here but not in"));
                }
            }
        }

        for (field, key) in &manifest.keys {
            let text = lookup(&value, key)
                .ok_or_else(|| WidgetError::MissingKey { file: file.clone(), key: key.clone() })?;
            check_listing_text(&file, field, key, text)?;
        }
    }
    Ok(())
}

/// Every leaf of an i18n file as a dotted path; objects are walked, anything else is a leaf.
fn collect_leaves(value: &Value, prefix: &str, leaves: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(object) if !object.is_empty() => {
            for (key, child) in object {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                collect_leaves(child, &path, leaves);
            }
        }
        _ => {
            leaves.insert(prefix.to_owned());
        }
    }
}

fn lookup<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    key.split('.').try_fold(value, |node, part| node.get(part))?.as_str()
}

/// Kommo's listing checklist; the form's texts must match these, so they carry the same limits.
fn check_listing_text(file: &str, field: &str, key: &str, text: &str) -> Result<(), WidgetError> {
    let problem =
        |problem: String| Err(WidgetError::ListingText { file: file.into(), key: key.into(), problem });
    let length = text.chars().count();
    match field {
        "widget.name" => {
            if length > 30 {
                return problem(format!("is {length} characters; Kommo allows at most 30 in a name"));
            }
            if let Some(word) = text.split_whitespace().find(|word| word.chars().count() > 19) {
                return problem(format!(
                    "has the word `{word}`; Kommo allows at most 19 characters per word"
                ));
            }
            if text.to_lowercase().contains("kommo") {
                return problem("contains \"Kommo\", which Kommo forbids in a name".into());
            }
        }
        "widget.short_description" if length > 50 => {
            return problem(format!("is {length} characters; Kommo allows at most 50"));
        }
        "widget.description" if length > 400 => {
            return problem(format!("is {length} characters; Kommo allows at most 400"));
        }
        _ => {}
    }
    Ok(())
}

fn check_images(manifest: &Manifest, files: &BTreeMap<String, Vec<u8>>) -> Result<(), WidgetError> {
    let mut required: Vec<(&str, u32, u32)> = IMAGES.to_vec();
    if manifest.locations.iter().any(|location| location == "digital_pipeline") {
        required.push(DP_IMAGE);
    }
    for (name, width, height) in required {
        let bytes = files.get(name).ok_or_else(|| WidgetError::Missing { file: name.into() })?;
        let (found_width, found_height) = check_image(name, bytes)?;
        if (found_width, found_height) != (width, height) {
            return Err(WidgetError::ImageSize {
                file: name.into(),
                width: found_width,
                height: found_height,
                expected_width: width,
                expected_height: height,
            });
        }
    }
    // Kommo's size ceiling covers every image, not only the logos.
    for (name, bytes) in files {
        if is_image(name) {
            check_image(name, bytes)?;
        }
    }
    Ok(())
}

/// Longest line a hand-written script has here; longer ones read as minified code, which
/// Kommo's moderators refuse.
const MAX_SCRIPT_LINE: usize = 200;

/// What Kommo's code audit refuses in a widget script, found line by line (comments
/// included: a forbidden call is refused even when only mentioned, which keeps the rule simple).
const FORBIDDEN_IN_SCRIPT: [(&str, &str); 6] = [
    ("eval(", "`eval` is not allowed"),
    ("new Function(", "`new Function` is `eval` by another name"),
    ("async: false", "synchronous XHR is not allowed"),
    ("async:false", "synchronous XHR is not allowed"),
    ("console.trace", "`console.trace` is allowed only in catch and rejection handlers"),
    ("APP.", "nothing may be written to Kommo's global APP"),
];

/// Kommo's code rules for scripts: no minified lines, no `eval`, no synchronous XHR, no
/// writes to `APP`, dependencies only through `define([...])`.
fn check_script(name: &str, text: &str) -> Result<(), WidgetError> {
    let refuse = |line: usize, problem: &str| {
        Err(WidgetError::Script { file: name.into(), line, problem: problem.into() })
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.chars().count() > MAX_SCRIPT_LINE {
            return refuse(number, "a line this long reads as minified code");
        }
        let code = line.trim_start();
        if code.starts_with("//") || code.starts_with('*') || code.starts_with("/*") {
            continue;
        }
        for (needle, problem) in FORBIDDEN_IN_SCRIPT {
            if line.contains(needle) {
                return refuse(number, problem);
            }
        }
        if line.contains("require(") && !line.contains("define(") {
            return refuse(number, "load dependencies through define([...]), not require()");
        }
    }
    if name == "script.js" && !text.contains("define(") {
        return refuse(1, "the widget script must be an AMD module: define([...], function ...)");
    }
    Ok(())
}

/// Checks the size ceiling and PNG signature, and returns the width and height from IHDR.
fn check_image(name: &str, bytes: &[u8]) -> Result<(u32, u32), WidgetError> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > MAX_IMAGE_BYTES {
        return Err(WidgetError::ImageTooLarge { file: name.into(), bytes: size });
    }
    // The PNG format puts IHDR first: length 13, type, then width and height, big-endian.
    let not_png = || WidgetError::NotPng { file: name.into() };
    let header = bytes.get(..24).ok_or_else(not_png)?;
    if !header.starts_with(PNG_SIGNATURE) || header[8..12] != [0, 0, 0, 13] || header[12..16] != *b"IHDR" {
        return Err(not_png());
    }
    let number = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    Ok((number(16), number(20)))
}

/// A zip Kommo accepts and that comes out identical for identical input: the files at the
/// root with `/` separators, their folders as entries (as `zip -r` makes them), sorted, with
/// fixed times, permissions and host system.
fn build_zip(files: &BTreeMap<String, Vec<u8>>) -> zip::result::ZipResult<Vec<u8>> {
    let time = DateTime::from_date_and_time(2020, 1, 1, 0, 0, 0).unwrap_or_default();
    let base = SimpleFileOptions::default().last_modified_time(time).system(System::Unix);
    let file_options = base
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .unix_permissions(0o644);
    let folder_options = base.unix_permissions(0o755);

    let mut entries: BTreeMap<String, Option<&[u8]>> = BTreeMap::new();
    for (name, bytes) in files {
        if let Some((folder, _)) = name.rsplit_once('/') {
            entries.insert(format!("{folder}/"), None);
        }
        entries.insert(name.clone(), Some(bytes));
    }

    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        match bytes {
            None => zip.add_directory(name, folder_options)?,
            Some(bytes) => {
                zip.start_file(name, file_options)?;
                zip.write_all(bytes)?;
            }
        }
    }
    Ok(zip.finish()?.into_inner())
}

/// Writes next to `out` and renames, so a failed write never leaves half an archive to upload.
fn write_atomically(out: &Path, archive: &[u8]) -> Result<(), WidgetError> {
    let write_error = |source| WidgetError::Write { file: display(out), source };
    let name = out.file_name().ok_or_else(|| {
        write_error(io::Error::new(io::ErrorKind::InvalidInput, "the output path names no file"))
    })?;
    let mut temporary = name.to_os_string();
    temporary.push(format!(".{}.partial", std::process::id()));
    let temporary = out.with_file_name(temporary);
    let result = fs::write(&temporary, archive).and_then(|()| fs::rename(&temporary, out));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend/kommo-widget")
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// A scratch copy of the real widget, to break one rule at a time.
    fn broken_copy() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let widget = dir.path().join("widget");
        copy_dir(&widget_dir(), &widget);
        (dir, widget)
    }

    /// Packs `widget`, expects a refusal, and checks that no archive was left behind.
    fn refused(widget: &Path) -> WidgetError {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("widget.zip");
        let error = pack(widget, &out).expect_err("the broken widget was packed");
        assert!(!out.exists(), "a refused pack wrote {}", out.display());
        assert_eq!(fs::read_dir(out_dir.path()).unwrap().count(), 0, "a refused pack left files");
        assert!(error.to_string().starts_with(error.file()), "the message names the file: {error}");
        error
    }

    fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
        let mut value: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        edit(&mut value);
        fs::write(path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
    }

    /// The smallest file this module reads as a PNG: signature, IHDR, IEND.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = PNG_SIGNATURE.to_vec();
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(b"IHDR");
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(b"IEND");
        bytes.extend_from_slice(&[0xAE, 0x42, 0x60, 0x82]);
        bytes
    }

    fn zip_names(bytes: &[u8]) -> Vec<String> {
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        archive.file_names().map(|name| name.unwrap().into_owned()).collect()
    }

    #[test]
    fn packs_the_real_widget_with_every_file_at_the_root() {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("pipepay-widget.zip");
        let report = pack(&widget_dir(), &out).unwrap();

        let bytes = fs::read(&out).unwrap();
        assert_eq!(report.bytes, bytes.len() as u64);
        let names = zip_names(&bytes);
        assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
        assert!(names.contains(&"script.js".to_owned()), "{names:?}");
        assert!(names.contains(&"i18n/en.json".to_owned()), "{names:?}");
        assert!(names.contains(&"i18n/es.json".to_owned()), "{names:?}");
        for (image, _, _) in IMAGES {
            assert!(names.contains(&image.to_owned()), "{image} is not in {names:?}");
            assert!(report.files.contains(&image.to_owned()));
        }
        for name in &names {
            assert!(
                !name.starts_with('/') && !name.contains('\\') && !name.starts_with("kommo-widget"),
                "{name}"
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are sorted");
        assert!(report.files.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(report.files.iter().all(|file| names.contains(file)));

        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let mut manifest = String::new();
        io::Read::read_to_string(&mut archive.by_name("manifest.json").unwrap(), &mut manifest).unwrap();
        assert_eq!(manifest.as_bytes(), fs::read(widget_dir().join("manifest.json")).unwrap());
    }

    #[test]
    fn packing_for_a_deployment_writes_its_links_in() {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("deployed.zip");
        pack_for(&widget_dir(), &out, "https://pay.agency.example/", "help@agency.example").unwrap();
        let bytes = fs::read(&out).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut all = String::new();
        for name in ["script.js", "manifest.json"] {
            std::io::Read::read_to_string(&mut archive.by_name(name).unwrap(), &mut all).unwrap();
        }
        assert!(all.contains("https://pay.agency.example") && all.contains("help@agency.example"));
        assert!(!all.contains(PLACEHOLDER_HOST), "no placeholder is left");
    }

    #[test]
    fn packing_twice_gives_identical_bytes() {
        let out_dir = tempfile::tempdir().unwrap();
        let first = out_dir.path().join("first.zip");
        let second = out_dir.path().join("second.zip");
        pack(&widget_dir(), &first).unwrap();
        pack(&widget_dir(), &second).unwrap();
        assert_eq!(fs::read(first).unwrap(), fs::read(second).unwrap());
    }

    #[test]
    fn the_shipped_widget_follows_the_decisions() {
        let manifest: Value =
            serde_json::from_slice(&fs::read(widget_dir().join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["widget"]["installation"], Value::Bool(false));
        assert_eq!(manifest["locations"], serde_json::json!(["settings", "lcard-1", "digital_pipeline"]));
        assert_eq!(manifest["dp"]["webhook_url"], "https://pipepay.example/hooks/kommo/dp");
        let dp_keys: Vec<&String> = manifest["dp"]["settings"].as_object().unwrap().keys().collect();
        assert_eq!(dp_keys, ["amount", "currency", "note", "pipepay_key"]);
        assert_eq!(manifest["widget"]["locale"], serde_json::json!(["en", "es"]));
        let mut placeholders = placeholder_files(&widget_dir()).unwrap();
        placeholders.sort();
        assert_eq!(placeholders, ["manifest.json", "script.js"]);
    }

    #[test]
    fn refuses_an_image_of_the_wrong_size() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("images/logo_min.png"), png(80, 80)).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::ImageSize { width: 80, height: 80, .. }), "{error}");
        assert_eq!(error.file(), "images/logo_min.png");
        assert!(error.to_string().contains("84×84"), "{error}");
    }

    #[test]
    fn refuses_an_image_that_is_not_a_png() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("images/logo.png"), b"GIF89a\x82\x00\x64\x00 not a png at all").unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::NotPng { .. }), "{error}");
        assert_eq!(error.file(), "images/logo.png");
    }

    #[test]
    fn refuses_an_image_over_300_kb() {
        let (_dir, widget) = broken_copy();
        let mut big = png(108, 108);
        big.resize(300 * 1000 + 1, 0);
        fs::write(widget.join("images/logo_small.png"), big).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::ImageTooLarge { .. }), "{error}");
        assert_eq!(error.file(), "images/logo_small.png");
    }

    #[test]
    fn refuses_a_missing_image() {
        let (_dir, widget) = broken_copy();
        fs::remove_file(widget.join("images/logo_main.png")).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Missing { .. }), "{error}");
        assert_eq!(error.file(), "images/logo_main.png");
    }

    #[test]
    fn refuses_i18n_files_of_different_structure() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("i18n/es.json"), |value| {
            value["pipepay"].as_object_mut().unwrap().remove("open");
        });
        let error = refused(&widget);
        assert!(
            matches!(error, WidgetError::I18nStructure { ref key, .. } if key == "pipepay.open"),
            "{error}"
        );
        assert_eq!(error.file(), "i18n/es.json");
    }

    #[test]
    fn refuses_an_i18n_key_the_manifest_needs() {
        let (_dir, widget) = broken_copy();
        for locale in ["en", "es"] {
            edit_json(&widget.join(format!("i18n/{locale}.json")), |value| {
                value["widget"].as_object_mut().unwrap().remove("short_description");
            });
        }
        let error = refused(&widget);
        assert!(
            matches!(error, WidgetError::MissingKey { ref key, .. } if key == "widget.short_description"),
            "{error}"
        );
        assert_eq!(error.file(), "i18n/en.json");
    }

    #[test]
    fn refuses_a_byte_order_mark() {
        let (_dir, widget) = broken_copy();
        let path = widget.join("i18n/es.json");
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(fs::read(&path).unwrap());
        fs::write(&path, bytes).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Bom { .. }), "{error}");
        assert_eq!(error.file(), "i18n/es.json");
    }

    #[test]
    fn refuses_crlf_line_endings() {
        let (_dir, widget) = broken_copy();
        let path = widget.join("script.js");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace('\n', "\r\n")).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::LineEnding { line: 1, .. }), "{error}");
        assert_eq!(error.file(), "script.js");
    }

    #[test]
    fn refuses_text_that_is_not_utf8() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("style.css"), b".pipepay-widget { content: \"\xE9\"; }\n").unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::NotUtf8 { .. }), "{error}");
        assert_eq!(error.file(), "style.css");
    }

    #[test]
    fn refuses_a_missing_locale_file() {
        let (_dir, widget) = broken_copy();
        fs::remove_file(widget.join("i18n/es.json")).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::MissingLocale { ref locale, .. } if locale == "es"), "{error}");
        assert_eq!(error.file(), "i18n/es.json");
    }

    #[test]
    fn refuses_a_locale_file_the_manifest_does_not_declare() {
        let (_dir, widget) = broken_copy();
        fs::copy(widget.join("i18n/en.json"), widget.join("i18n/pt.json")).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::UndeclaredLocale { .. }), "{error}");
        assert_eq!(error.file(), "i18n/pt.json");
    }

    #[test]
    fn refuses_an_extra_file() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("README.md"), "notes\n").unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Unexpected { .. }), "{error}");
        assert_eq!(error.file(), "README.md");
    }

    #[test]
    fn refuses_an_extra_folder() {
        let (_dir, widget) = broken_copy();
        fs::create_dir(widget.join("images/source")).unwrap();
        fs::write(widget.join("images/source/logo.png"), png(400, 272)).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Unexpected { .. }), "{error}");
        assert_eq!(error.file(), "images/source/");
    }

    #[test]
    fn refuses_a_hidden_file() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("images/.DS_Store"), b"\0\0\0\x01Bud1").unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Hidden { .. }), "{error}");
        assert_eq!(error.file(), "images/.DS_Store");
    }

    #[test]
    fn refuses_a_missing_manifest() {
        let (_dir, widget) = broken_copy();
        fs::remove_file(widget.join("manifest.json")).unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Missing { .. }), "{error}");
        assert_eq!(error.file(), "manifest.json");
    }

    #[test]
    fn refuses_a_manifest_that_is_not_json() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("manifest.json"), "{ \"widget\": \n").unwrap();
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::Json { .. }), "{error}");
        assert_eq!(error.file(), "manifest.json");
    }

    #[test]
    fn refuses_another_interface_version() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("manifest.json"), |value| value["widget"]["interface_version"] = 1.into());
        let error = refused(&widget);
        assert!(error.to_string().contains("interface_version"), "{error}");
        assert_eq!(error.file(), "manifest.json");
    }

    #[test]
    fn refuses_a_missing_required_widget_key() {
        for key in ["name", "description", "short_description", "interface_version", "locale", "installation"]
        {
            let (_dir, widget) = broken_copy();
            edit_json(&widget.join("manifest.json"), |value| {
                value["widget"].as_object_mut().unwrap().remove(key);
            });
            let error = refused(&widget);
            assert!(matches!(error, WidgetError::Manifest { .. }), "{key}: {error}");
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn refuses_missing_or_unknown_locations() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("manifest.json"), |value| {
            value.as_object_mut().unwrap().remove("locations");
        });
        assert!(refused(&widget).to_string().contains("`locations`"));

        edit_json(&widget.join("manifest.json"), |value| {
            value["locations"] = serde_json::json!(["lead_card"])
        });
        assert!(refused(&widget).to_string().contains("lead_card"));
    }

    #[test]
    fn refuses_installation_without_settings() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("manifest.json"), |value| value["widget"]["installation"] = true.into());
        let error = refused(&widget);
        assert!(error.to_string().contains("`settings` is required"), "{error}");
        assert_eq!(error.file(), "manifest.json");
    }

    #[test]
    fn settings_names_must_have_texts_in_every_locale() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("manifest.json"), |value| {
            value["widget"]["installation"] = true.into();
            value["settings"] = serde_json::json!({ "tenant": { "name": "settings.tenant", "type": "text", "required": true } });
        });
        let error = refused(&widget);
        assert!(
            matches!(error, WidgetError::MissingKey { ref key, .. } if key == "settings.tenant"),
            "{error}"
        );

        for locale in ["en", "es"] {
            edit_json(&widget.join(format!("i18n/{locale}.json")), |value| {
                value["settings"] = serde_json::json!({ "tenant": "Tenant" });
            });
        }
        let out_dir = tempfile::tempdir().unwrap();
        pack(&widget, &out_dir.path().join("widget.zip")).unwrap();
    }

    #[test]
    fn refuses_a_name_over_kommos_limits() {
        let (_dir, widget) = broken_copy();
        for locale in ["en", "es"] {
            edit_json(&widget.join(format!("i18n/{locale}.json")), |value| {
                value["widget"]["name"] = "Payments for Kommo by pipepay".into();
            });
        }
        let error = refused(&widget);
        assert!(matches!(error, WidgetError::ListingText { .. }), "{error}");
        assert_eq!(error.file(), "i18n/en.json");
    }

    #[test]
    fn digital_pipeline_needs_its_logo() {
        let (_dir, widget) = broken_copy();
        fs::remove_file(widget.join("images/logo_dp.png")).unwrap();
        edit_json(&widget.join("manifest.json"), |value| {
            value["locations"] = serde_json::json!(["settings", "digital_pipeline"]);
            value["dp"] =
                serde_json::json!({ "action_multiple": false, "webhook_url": "https://pipepay.example/dp" });
        });
        let error = refused(&widget);
        assert_eq!(error.file(), "images/logo_dp.png");
    }

    #[test]
    fn the_shipped_widget_ships_the_digital_pipeline_logo() {
        let out_dir = tempfile::tempdir().unwrap();
        let report = pack(&widget_dir(), &out_dir.path().join("w.zip")).unwrap();
        assert!(report.files.contains(&"images/logo_dp.png".to_owned()), "{:?}", report.files);
    }

    #[test]
    fn a_digital_pipeline_logo_of_the_wrong_size_is_refused() {
        let (_dir, widget) = broken_copy();
        fs::write(widget.join("images/logo_dp.png"), png(170, 109)).unwrap();
        let error = refused(&widget);
        assert_eq!(error.file(), "images/logo_dp.png");
        assert!(error.to_string().contains("174×109"), "{error}");
    }

    #[test]
    fn the_dp_block_needs_action_multiple_and_an_https_webhook() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("manifest.json"), |value| {
            value["dp"].as_object_mut().unwrap().remove("action_multiple");
        });
        assert!(refused(&widget).to_string().contains("dp.action_multiple"));
        edit_json(&widget.join("manifest.json"), |value| {
            value["dp"]["action_multiple"] = Value::Bool(false);
            value["dp"]["webhook_url"] = Value::String("http://pipepay.example/hooks/kommo/dp".into());
        });
        assert!(refused(&widget).to_string().contains("dp.webhook_url"));
        edit_json(&widget.join("manifest.json"), |value| {
            value["dp"]["webhook_url"] = Value::String("https://pipepay.example/hooks/kommo/dp".into());
            value["locations"] = serde_json::json!(["settings", "lcard-1"]);
        });
        assert!(refused(&widget).to_string().contains("needs the `digital_pipeline` location"));
    }

    #[test]
    fn dp_settings_need_texts_in_every_locale() {
        let (_dir, widget) = broken_copy();
        edit_json(&widget.join("i18n/es.json"), |value| {
            value["dp"]["settings"].as_object_mut().unwrap().remove("note");
        });
        assert!(refused(&widget).file().starts_with("i18n/"));
    }

    #[test]
    fn scripts_are_held_to_kommos_code_rules() {
        for (line, expected) in [
            ("  var x = eval('1');", "eval"),
            ("  $.ajax({ url: u, async: false });", "synchronous XHR"),
            ("  APP.foo = 1;", "APP"),
            ("  console.trace('here');", "console.trace"),
            ("  var m = require('moment');", "define"),
        ] {
            let (_dir, widget) = broken_copy();
            let script = fs::read_to_string(widget.join("script.js")).unwrap();
            fs::write(widget.join("script.js"), format!("{script}{line}\n")).unwrap();
            let error = refused(&widget);
            assert_eq!(error.file(), "script.js");
            assert!(error.to_string().contains(expected), "{line}: {error}");
        }
        let (_dir, widget) = broken_copy();
        let script = fs::read_to_string(widget.join("script.js")).unwrap();
        fs::write(widget.join("script.js"), format!("{script}var a = '{}';\n", "x".repeat(300))).unwrap();
        assert!(refused(&widget).to_string().contains("minified"));
    }
}
