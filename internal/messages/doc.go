// Package messages is the catalog of invitee-facing texts (usher's pages
// and the invitation mail): one JSON file per language under catalogs/,
// looked up by key. English is shipped and complete; a key missing from
// another language falls back to English, so a partial translation works.
//
// Texts name their arguments in braces: "{app}" is replaced by the value
// given for "app"; "{*email}" too, but HTML shows that value in bold.
package messages
