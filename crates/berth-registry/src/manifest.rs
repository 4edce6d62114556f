//! Manifests and indexes as registries serve them: Docker schema 2 and OCI image
//! manifests, Docker manifest lists and OCI indexes, with platform selection.

use berth_image::digest::Digest;
use serde_json::Value;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_NONDISTRIBUTABLE_LAYER: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// What a pull asks for, in the `Accept` header.
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Largest manifest or index accepted (the distribution project's limit).
pub const MAX_MANIFEST: usize = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: u64 = 8 << 20;
/// Most indexes followed to reach a manifest.
pub const MAX_INDEX_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest too large: {0} bytes (at most {MAX_MANIFEST})")]
    TooLarge(usize),
    #[error("invalid manifest: {0}")]
    Invalid(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedType(String),
    #[error("no matching manifest for {0} in the manifest list entries")]
    NoPlatform(String),
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Descriptor {
    fn parse(v: &Value, what: &str) -> Result<Self, ManifestError> {
        let digest = v["digest"]
            .as_str()
            .ok_or_else(|| ManifestError::Invalid(format!("{what} without a digest")))?
            .parse::<Digest>()
            .map_err(|e| ManifestError::Invalid(format!("{what}: {e}")))?;
        let size = v["size"]
            .as_u64()
            .ok_or_else(|| ManifestError::Invalid(format!("{what} without a size")))?;
        Ok(Descriptor {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            digest,
            size,
        })
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

/// An image manifest: its config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One entry of an index, with its platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub desc: Descriptor,
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

/// Parses a manifest or index, given the media type the registry sent (the document's
/// own `mediaType` when it has one wins). A document that is both an index and a
/// manifest (`manifests` beside `config`/`layers`) is refused.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Document, ManifestError> {
    if bytes.len() > MAX_MANIFEST {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::Invalid(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ManifestError::Invalid("not an object".into()));
    }
    let has_manifests = v.get("manifests").is_some();
    let has_image = v.get("config").is_some() || v.get("layers").is_some();
    if has_manifests && has_image {
        return Err(ManifestError::Invalid(
            "the document is both an index and a manifest".into(),
        ));
    }
    let content_type = content_type.split(';').next().unwrap_or_default().trim();
    let mt = v["mediaType"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(content_type)
        .to_string();
    if v["schemaVersion"].as_i64() == Some(1) {
        return Err(ManifestError::UnsupportedType(
            "application/vnd.docker.distribution.manifest.v1+json (schema 1)".into(),
        ));
    }
    let kind_index = match mt.as_str() {
        DOCKER_LIST | OCI_INDEX => true,
        DOCKER_MANIFEST | OCI_MANIFEST => false,
        // OCI allows mediaType to be left out: tell by the fields
        "" | "application/json" => has_manifests,
        other => return Err(ManifestError::UnsupportedType(other.to_string())),
    };
    if kind_index != has_manifests && (has_manifests || has_image) {
        return Err(ManifestError::Invalid(format!(
            "media type {mt} does not match the document's fields"
        )));
    }
    if kind_index {
        let mut out = Vec::new();
        for (i, m) in v["manifests"]
            .as_array()
            .ok_or_else(|| ManifestError::Invalid("manifests is not a list".into()))?
            .iter()
            .enumerate()
        {
            let desc = Descriptor::parse(m, &format!("manifests[{i}]"))?;
            let p = &m["platform"];
            out.push(IndexEntry {
                desc,
                os: p["os"].as_str().unwrap_or_default().to_string(),
                architecture: p["architecture"].as_str().unwrap_or_default().to_string(),
                variant: p["variant"].as_str().unwrap_or_default().to_string(),
            });
        }
        return Ok(Document::Index(out));
    }
    let config = Descriptor::parse(&v["config"], "config")?;
    let mut layers = Vec::new();
    for (i, l) in v["layers"]
        .as_array()
        .ok_or_else(|| ManifestError::Invalid("layers is not a list".into()))?
        .iter()
        .enumerate()
    {
        let d = Descriptor::parse(l, &format!("layers[{i}]"))?;
        match d.media_type.as_str() {
            DOCKER_LAYER_GZIP
            | OCI_LAYER
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | DOCKER_FOREIGN_LAYER
            | OCI_NONDISTRIBUTABLE_LAYER
            | "" => {}
            other => {
                return Err(ManifestError::UnsupportedType(format!(
                    "{other} (layer {i})"
                )))
            }
        }
        layers.push(d);
    }
    Ok(Document::Image(ImageManifest {
        media_type: mt,
        config,
        layers,
    }))
}

pub use berth_image::platform::Platform;

fn entry_matches(p: &Platform, e: &IndexEntry) -> bool {
    p.matches(&e.os, &e.architecture, &e.variant)
}

/// The index entry for `p`: an exact variant first, else one without a variant.
pub fn select<'a>(
    entries: &'a [IndexEntry],
    p: &Platform,
) -> Result<&'a IndexEntry, ManifestError> {
    entries
        .iter()
        .find(|e| entry_matches(p, e) && e.variant == p.variant)
        .or_else(|| entries.iter().find(|e| entry_matches(p, e)))
        .ok_or_else(|| ManifestError::NoPlatform(p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn docker_and_oci_manifests() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":10}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{}","size":20}}]}}"#,
            d(1),
            d(2)
        );
        let Document::Image(im) = parse(m.as_bytes(), "").unwrap() else {
            panic!()
        };
        assert_eq!(im.layers.len(), 1);
        assert_eq!(im.layers[0].size, 20);
        // OCI without mediaType, told by the header
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},"layers":[]}}"#,
            d(1)
        );
        assert!(matches!(
            parse(m.as_bytes(), OCI_MANIFEST).unwrap(),
            Document::Image(_)
        ));
    }

    #[test]
    fn refusals() {
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"digest":"{}","size":1}},"layers":[]}}"#,
            d(1)
        );
        assert!(matches!(
            parse(both.as_bytes(), OCI_INDEX),
            Err(ManifestError::Invalid(m)) if m.contains("both")
        ));
        let big = vec![b' '; MAX_MANIFEST + 1];
        assert!(matches!(parse(&big, ""), Err(ManifestError::TooLarge(_))));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"mediaType":"text/nope"}"#, ""),
            Err(ManifestError::UnsupportedType(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"name":"x"}"#, ""),
            Err(ManifestError::UnsupportedType(_))
        ));
        let bad_layer = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{}","size":1}},"layers":[{{"mediaType":"application/x-weird","digest":"{}","size":1}}]}}"#,
            d(1),
            d(2)
        );
        assert!(matches!(
            parse(bad_layer.as_bytes(), ""),
            Err(ManifestError::UnsupportedType(_))
        ));
        assert!(parse(b"[]", "").is_err());
        assert!(parse(b"{not json", "").is_err());
    }

    #[test]
    fn platform_selection() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"digest":"{}","size":1,"platform":{{"os":"windows","architecture":"amd64"}}}}]}}"#,
            d(1),
            d(2),
            d(3),
            d(4)
        );
        let Document::Index(e) = parse(idx.as_bytes(), "").unwrap() else {
            panic!()
        };
        let pick =
            |s: &str| select(&e, &Platform::parse(s).unwrap()).map(|x| x.desc.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), d(3));
        assert_eq!(pick("linux/arm/v7").unwrap(), d(2));
        assert_eq!(pick("linux/arm/v6").unwrap(), d(1));
        assert!(pick("linux/s390x").is_err());
        assert!(Platform::parse("linux//x").is_err());
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().architecture,
            "amd64"
        );
    }
}
