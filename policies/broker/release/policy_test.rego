# METADATA
# title: Tests of the release decisions
# description: One test per promise; `broker policy test` runs them.
package broker.release_test

import data.broker.release

now := 1795600000

day := 86400

consent := {
	"consent_id": "cn_a",
	"recipient": "tp_app",
	"purposes": ["personalised_service"],
	"categories": ["consumption"],
	"granularity": "15min",
	"history_days": 30,
	"identified": true,
	"explicit": true,
	"given_s": now - day,
	"expires_s": now + (300 * day),
}

base := {
	"now_s": now,
	"recipient": {"id": "tp_app", "kind": "third_party", "status": "active"},
	"purpose": "personalised_service",
	"request": {
		"scope": "subject",
		"subject": "hs1:00",
		"categories": ["consumption"],
		"granularity": "hourly",
		"from_s": now - (10 * day),
		"to_s": now,
	},
	"consents": [consent],
}

decide(inp) := d if {
	d := release.decision with input as inp
}

codes(d) := {r.code | some r in d.reasons}

with_request(field, value) := object.union(base, {"request": object.union(base.request, {field: value})})

with_consent(field, value) := object.union(base, {"consents": [object.union(consent, {field: value})]})

test_consented_request_is_released_raw if {
	d := decide(base)
	d.allow == true
	d.tier == "raw"
	d.granularity == "hourly"
	d.consent_ids == ["cn_a"]
	codes(d) == {"consent"}
}

test_no_consent_denies if {
	d := decide(object.union(base, {"consents": []}))
	d.allow == false
	codes(d) == {"no_covering_consent"}
}

test_unknown_purpose_denies if {
	d := decide(object.union(base, {"purpose": "astrology"}))
	d.allow == false
	"unknown_purpose" in codes(d)
}

test_unknown_category_denies if {
	d := decide(with_request("categories", ["consumption", "dna"]))
	d.allow == false
	"unknown_category" in codes(d)
}

test_category_outside_consent_denies if {
	d := decide(with_request("categories", ["consumption", "generation"]))
	d.allow == false
	codes(d) == {"no_covering_consent"}
}

test_every_missing_scope_field_denies if {
	results := [d.allow |
		some field in ["scope", "categories", "granularity", "from_s", "to_s"]
		inp := object.union(object.remove(base, ["request"]), {"request": object.remove(base.request, [field])})
		d := decide(inp)
	]
	count(results) == 5
	every allowed in results {
		allowed == false
	}
}

test_empty_categories_deny if {
	d := decide(with_request("categories", []))
	codes(d) == {"missing_scope"}
}

test_period_backwards_denies if {
	d := decide(with_request("from_s", now + day))
	"missing_scope" in codes(d)
}

test_finer_than_consent_denies if {
	d := decide(object.union(with_consent("granularity", "daily"), {}))
	d.allow == false
	codes(d) == {"no_covering_consent"}
}

test_finer_than_daily_needs_explicit_consent if {
	d := decide(with_consent("explicit", false))
	d.allow == false
	codes(d) == {"explicit_consent_required"}
}

test_daily_without_explicit_consent_is_released if {
	inp := object.union(with_consent("explicit", false), {"request": object.union(base.request, {"granularity": "daily"})})
	d := decide(inp)
	d.allow == true
}

test_marketing_needs_explicit_consent_even_monthly if {
	c := object.union(consent, {"purposes": ["marketing"], "explicit": false})
	inp := object.union(base, {
		"purpose": "marketing",
		"consents": [c],
		"request": object.union(base.request, {"granularity": "monthly"}),
	})
	codes(decide(inp)) == {"explicit_consent_required"}
	decide(object.union(inp, {"consents": [object.union(c, {"explicit": true})]})).allow == true
}

test_expiry_is_exclusive_at_the_boundary_second if {
	decide(with_consent("expires_s", now + 1)).allow == true
	inp := object.union(with_consent("expires_s", now), {"request": object.union(base.request, {"to_s": now - 1})})
	decide(inp).allow == false
}

test_withdrawn_consent_is_absent_from_input if {
	# the ledger passes only consents in force: after a withdrawal the list is empty
	decide(object.union(base, {"consents": []})).allow == false
}

test_history_window if {
	decide(with_request("from_s", (now - day) - (30 * day))).allow == true
	decide(with_request("from_s", ((now - day) - (30 * day)) - 1)).allow == false
}

test_other_recipients_consent_does_not_count if {
	d := decide(with_consent("recipient", "tp_other"))
	codes(d) == {"no_covering_consent"}
}

test_pseudonymous_consent_alone_never_addresses_the_customer if {
	d := decide(with_consent("identified", false))
	d.allow == false
	codes(d) == {"pseudonymous_consent_only"}
}

test_an_identified_consent_beside_a_pseudonymous_one_is_the_basis if {
	pseudonymous := object.union(consent, {"consent_id": "cn_p", "identified": false})
	d := decide(object.union(base, {"consents": [pseudonymous, consent]}))
	d.allow == true
	d.consent_ids == ["cn_a"]
}

test_pseudonymous_explicit_consent_does_not_lend_an_identified_one_its_opt_in if {
	pseudonymous := object.union(consent, {"consent_id": "cn_p", "identified": false})
	identified := object.union(consent, {"explicit": false})
	codes(decide(object.union(base, {"consents": [pseudonymous, identified]}))) == {"pseudonymous_consent_only"}
}

test_identified_consent_with_a_stricter_tier_gives_pseudonyms if {
	d := decide(with_request("tier", "pseudonymised"))
	d.allow == true
	d.tier == "pseudonymised"
	"customer_ref" in d.fields_drop
}

test_stricter_tier_on_request if {
	d := decide(with_request("tier", "generalised"))
	d.tier == "generalised"
}

test_unknown_tier_denies if {
	codes(decide(with_request("tier", "cleartext"))) == {"unknown_tier"}
}

test_suspended_recipient_denies if {
	d := decide(object.union(base, {"recipient": object.union(base.recipient, {"status": "suspended"})}))
	codes(d) == {"recipient_not_active"}
}

test_ems_never_gets_a_household if {
	ems := {"id": "ems_grid", "kind": "ems", "status": "active"}
	d := decide(object.union(base, {"recipient": ems, "purpose": "grid_operations"}))
	d.allow == false
	"personal_data_to_operator" in codes(d)
}

test_ems_gets_aggregates_for_grid_operations if {
	ems := {"id": "ems_grid", "kind": "ems", "status": "active"}
	inp := object.union(base, {
		"recipient": ems,
		"purpose": "grid_operations",
		"consents": [],
		"request": object.union(base.request, {"scope": "aggregate", "granularity": "15min"}),
	})
	d := decide(inp)
	d.allow == true
	d.tier == "aggregated"
	codes(d) == {"legal_obligation"}
	some o in d.obligations
	o.kind == "aggregate_threshold"
	o.min_members >= 15
}

test_ems_may_not_ask_for_other_purposes if {
	ems := {"id": "ems_grid", "kind": "ems", "status": "active"}
	inp := object.union(base, {"recipient": ems, "request": object.union(base.request, {"scope": "aggregate"})})
	codes(decide(inp)) == {"recipient_kind_not_allowed", "no_aggregate_basis"}
}

test_no_aggregate_of_a_consent_based_service_without_consent if {
	inp := object.union(base, {"consents": [], "request": object.union(base.request, {"scope": "aggregate"})})
	d := decide(inp)
	d.allow == false
	codes(d) == {"no_aggregate_basis"}
}

test_third_party_without_consent_gets_research_aggregates_only if {
	inp := object.union(base, {
		"purpose": "energy_efficiency_research",
		"consents": [],
		"request": object.union(base.request, {"scope": "aggregate", "granularity": "daily"}),
	})
	d := decide(inp)
	d.allow == true
	d.tier == "aggregated"
	codes(d) == {"aggregate_only"}
}

test_only_research_and_grid_operations_release_aggregates_without_consent if {
	marked := {name | some name, p in data.broker.catalogue.purposes; p.aggregate_release == true}
	marked == {"energy_efficiency_research", "grid_operations"}
}

test_research_is_generalised_and_daily if {
	c := object.union(consent, {"purposes": ["energy_efficiency_research"], "recipient": "rs_uni"})
	inp := object.union(base, {
		"purpose": "energy_efficiency_research",
		"recipient": {"id": "rs_uni", "kind": "researcher", "status": "active"},
		"consents": [c],
		"request": object.union(base.request, {"granularity": "daily"}),
	})
	d := decide(inp)
	d.tier == "generalised"
	codes(decide(object.union(inp, {"request": object.union(inp.request, {"granularity": "hourly"})}))) == {"granularity_too_fine"}
}

test_billing_needs_the_contract if {
	supplier := {"id": "sup_1", "kind": "supplier", "status": "active"}
	inp := object.union(base, {
		"purpose": "billing",
		"recipient": supplier,
		"consents": [],
		"request": object.union(base.request, {"granularity": "30min"}),
	})
	codes(decide(inp)) == {"no_contract"}
	d := decide(object.union(inp, {"contract": {"recipient": "sup_1", "active": true}}))
	d.allow == true
	d.tier == "raw"
	codes(d) == {"contract"}
	aggregate := object.union(inp, {"request": object.union(inp.request, {"scope": "aggregate"})})
	codes(decide(aggregate)) == {"no_aggregate_basis"}
}

test_denial_always_has_a_reason if {
	d := decide({})
	d.allow == false
	count(d.reasons) > 0
}

test_unknown_granularity_denies if {
	d := decide(with_request("granularity", "fortnightly"))
	d.allow == false
	"unknown_granularity" in codes(d)
}

test_purpose_with_an_unknown_legal_basis_denies if {
	odd := object.union(data.broker.catalogue.purposes.personalised_service, {"legal_basis": "whim"})
	d := release.decision with input as base with data.broker.catalogue.purposes.personalised_service as odd
	d.allow == false
	"legal_basis_unknown" in codes(d)
	odd_aggregate := object.union(odd, {"aggregate_release": true})
	inp := object.union(base, {"request": object.union(base.request, {"scope": "aggregate"})})
	a := release.decision with input as inp with data.broker.catalogue.purposes.personalised_service as odd_aggregate
	codes(a) == {"legal_basis_unknown"}
}
