//! A minimal OpenAPI v3 discovery: one document per group-version with the operations kubectl
//! inspects (the PATCH operation's `fieldValidation` parameter tells kubectl to use server-side
//! field validation) and CRD schemas for `kubectl explain`. `/openapi/v2` is not served.

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceDef};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`.
pub(crate) fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = Vec::new();
    for d in registry.all() {
        let gv = (d.group.clone(), d.version.clone());
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(registry, &g, &v))}),
        );
    }
    json!({"paths": paths})
}

fn hash(registry: &Registry, group: &str, version: &str) -> String {
    // Changes whenever the served resources of the group-version change.
    let doc =
        group_version(registry, group, version, crate::KubeVersion::DEFAULT).unwrap_or(Value::Null);
    let digest = ring::digest::digest(&ring::digest::SHA256, doc.to_string().as_bytes());
    hex::encode(&digest.as_ref()[..16])
}

fn schema_name(d: &ResourceDef) -> String {
    let mut group: Vec<&str> = d.group.split('.').collect();
    group.reverse();
    if d.group.is_empty() {
        format!("io.k8s.api.core.{}.{}", d.version, d.kind)
    } else {
        format!("{}.{}.{}", group.join("."), d.version, d.kind)
    }
}

fn operation(d: &ResourceDef, action: &str, params: &[&str], body_types: &[&str]) -> Value {
    let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let mut op = json!({
        "operationId": format!("{action}{}", d.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if !body_types.is_empty() {
        let mut content = Map::new();
        for t in body_types {
            content.insert(
                t.to_string(),
                json!({"schema": {"$ref": format!("#/components/schemas/{}", schema_name(d))}}),
            );
        }
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub(crate) fn group_version(
    registry: &Registry,
    group: &str,
    version: &str,
    kube: crate::KubeVersion,
) -> Option<Value> {
    let defs: Vec<&std::sync::Arc<ResourceDef>> = registry
        .all()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let write_params = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let patch_params = [
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "force",
        "pretty",
    ];
    let patch_types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for d in defs {
        let base = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("{prefix}/{}", d.plural)
        };
        let collection = json!({
            "get": operation(d, "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], &[]),
            "post": operation(d, "post", &write_params, &["application/json"]),
        });
        paths.insert(base.clone(), collection);
        if d.verbs.contains(&"get") {
            let item = json!({
                "get": operation(d, "get", &[], &[]),
                "put": operation(d, "put", &write_params, &["application/json"]),
                "patch": operation(d, "patch", &patch_params, &patch_types),
                "delete": operation(d, "delete", &["dryRun", "propagationPolicy"], &[]),
            });
            paths.insert(format!("{base}/{{name}}"), item);
        }
        let mut schema = d.schema.as_ref().and(d.raw_schema.clone()).unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        if let Some(m) = schema.as_object_mut() {
            m.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": d.group, "version": d.version, "kind": d.kind}]),
            );
        }
        schemas.insert(schema_name(d), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", kube.minor())},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
