//! Object semantics of the Kubernetes API server over `serde_json::Value`.
//!
//! Pure library (no I/O, no async; depends on `serde_json` and `thiserror` only) used by the
//! development API server (`apollo-devcluster`) so that it treats objects the way a real
//! kube-apiserver 1.36 does. The behaviour is ported from the apiserver's sources
//! (`k8s.io/apiextensions-apiserver` structural schemas, `k8s.io/kube-openapi` validation,
//! `k8s.io/apimachinery` field errors and managed fields, `sigs.k8s.io/structured-merge-diff`
//! v6.3.2) and pinned by unit tests with the real messages.
//!
//! # [`schema`]: custom resource schemas
//!
//! [`schema::Structural::from_json`] compiles a CRD version's `openAPIV3Schema` (type,
//! properties, items, additionalProperties, required, enum, default, nullable, format,
//! pattern, minimum/maximum (exclusive), multipleOf, min/maxLength, min/maxItems,
//! uniqueItems, min/maxProperties, allOf/anyOf/oneOf/not, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-embedded-resource`, `x-kubernetes-int-or-string`, `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`). Then, in the order the apiserver
//! applies them to a request body (and to objects read from storage):
//!
//! 1. [`schema::Structural::prune`]: unknown ObjectMeta fields and fields outside the schema
//!    are dropped and their paths returned (`spec.bogusField`, `metadata.foo`,
//!    `spec.list[0].x`), for `strict decoding error: unknown field "spec.bogusField"` (400
//!    under `fieldValidation=Strict`, see [`schema::strict_decoding_message`]) or a `Warning`
//!    header (`Warn`, see [`schema::unknown_field_warning`]); `apiVersion`, `kind` and
//!    `metadata` are kept at the root and in embedded resources; `null`s of non-nullable
//!    fields without a default are dropped; ObjectMeta is normalised like the Go round trip
//!    (empty labels/annotations/finalizers and empty strings disappear).
//! 2. [`schema::Structural::apply_defaults`]: `default:` values where the parent object exists
//!    and the field is absent (or `null` and not nullable); list items and map values that are
//!    `null` get the item default. Defaults are themselves pruned when the schema is compiled.
//! 3. [`schema::Structural::validate`] (create of the main resource),
//!    [`schema::Structural::validate_update`] (update, with the validation ratcheting of
//!    Kubernetes 1.33+: unchanged invalid values are tolerated), or
//!    [`schema::Structural::validate_status`] / [`schema::Structural::validate_status_update`]
//!    (`/status` writes: only `status`, messages relative to it): kube-openapi validation with
//!    the exact messages and field paths, then embedded resources' `apiVersion`/`kind`, then
//!    list-type `set`/`map` uniqueness. Example: `status.observedGeneration: Invalid value:
//!    "string": observedGeneration in body must be of type integer: "string"`.
//!    [`schema::invalid_message`] renders the 422 message and [`schema::FieldError::cause`]
//!    the `StatusCause`s.
//!
//! # [`apply`]: server-side apply and managedFields
//!
//! [`apply::apply`] implements `application/apply-patch+yaml`; [`apply::record_update`] is the
//! bookkeeping of every other write. See the module documentation for the ownership rules;
//! conflicts render as `Apply failed with 1 conflict: conflict with "ctrl-spec": .spec.command`.
//!
//! # [`compat`]: CRD fields by Kubernetes minor
//!
//! [`compat::CRD_VERSION_FIELDS`] records which CRD fields a server of which minor serves
//! (`selectableFields`: unknown before 1.30, gated off in 1.30, on from 1.31);
//! [`compat::strip_crd_fields`] removes what an older server lacks.
//!
//! # Not implemented / known differences
//!
//! * CEL (`x-kubernetes-validations`), metadata validation (names, labels; the server does
//!   it), `patternProperties`/`dependencies`, and ObjectMeta type errors. Ratcheting does not
//!   cover embedded-resource checks.
//! * `pattern` is matched with the `regex` crate, whose syntax and semantics are RE2's, as
//!   Go's `regexp` (linear time, no backreferences). String formats follow kube-openapi's registry, with
//!   simplified checks for `email`, `uri`, `hostname` and `duration`.
//! * Error order: Go iterates maps in random order, so the real server's order of errors
//!   from sibling properties varies; this crate uses schema order (deterministic).
//! * anyOf/oneOf report the failing alternative with the fewest errors, where kube-openapi
//!   picks the one with the most successful checks.
//! * Server-side apply handles one API version per kind (no conversion). Without a schema
//!   (built-in kinds) objects are "deduced": maps granular, lists atomic, top-level fields
//!   treated as struct fields; built-in types' own list-map/set markers other than ObjectMeta's
//!   are not known. Create via [`apply::record_update`] marks intermediate objects (`.`)
//!   like a CRD does, also for built-in kinds whose Go structs would hide them.
//! * Emptied maps/lists after SSA removal follow Kubernetes 1.36.0-1.36.2 (`{}`/`[]`), not the
//!   `null` of other releases.

pub mod apply;
pub mod compat;
mod formats;
mod gofmt;
pub mod schema;
pub mod smp;
