# METADATA
# title: Release decisions
# description: >-
#   Decides every release of meter data: whether it may leave, in which tier, how fine,
#   what to drop, how long the recipient may keep it, and why. Facts come only in the input
#   (recipient, purpose, request, the consents that may cover it, the time as now_s); this
#   policy reads no clock and no network. Anything not named is not granted: a missing or
#   unknown piece of scope is a reason to deny (X.1332 R3.4, R3.5, R4.4, C3.3).
# custom:
#   codes:
#     unknown_purpose: the purpose is not in the catalogue
#     recipient_kind_not_allowed: this kind of recipient may not receive data for this purpose
#     recipient_not_active: the recipient is suspended, revoked or unknown
#     missing_scope: the request does not say which categories, granularity, period or scope
#     unknown_category: a requested data category is not in the catalogue
#     category_not_for_purpose: a requested data category is not needed for this purpose
#     unknown_granularity: the requested granularity is not in the catalogue
#     granularity_too_fine: the purpose does not need data this fine
#     unknown_tier: the requested tier is not in the catalogue
#     personal_data_to_operator: the grid operator receives no household data (R4.4)
#     no_covering_consent: no active consent of the customer covers this request (R3.4)
#     explicit_consent_required: a consent covers it, but this purpose or granularity needs explicit opt-in
#     pseudonymous_consent_only: the customer consented to pseudonymous data only; such customers are served only in population releases, never addressed by customer id (C3.3)
#     no_aggregate_basis: this purpose allows no aggregate release without consent (the catalogue does not mark it aggregate_release)
#     no_contract: the purpose rests on a contract this recipient does not hold with the customer
#     legal_basis_unknown: the purpose names a legal basis the policy does not know
#     consent: released under the customer's consent
#     legal_obligation: released under a legal obligation, as aggregates only
#     contract: released under the customer's supply contract
#     aggregate_only: no consent is needed because only aggregates leave
#     denied: denied, and no rule says why (a gap in the policy, so deny all the same)
package broker.release

# The decision document: the allow path when it holds, else a denial with its reasons.
decision := allowed

decision := {
	"allow": false,
	"tier": null,
	"granularity": null,
	"fields_drop": [],
	"retention_days": 0,
	"reasons": denial_reasons,
	"obligations": [],
	"consent_ids": [],
} if not allowed

# The allow path is one rule whose conditions end it at the first that fails (most of the cost
# of a decision is here); only a denial evaluates the reasons below. The broker may evaluate
# this rule alone, compiled (see broker/rego/engine.py). tests/broker/policy/test_decision.py
# checks on generated inputs that the two agree: allowed exactly when no deny reason holds.
allowed := d if {
	purpose := data.broker.catalogue.purposes[input.purpose]
	r := input.request
	input.recipient.status == "active"
	is_string(input.recipient.id)
	input.recipient.kind in purpose.recipient_kinds
	purpose.legal_basis in {"consent", "legal_obligation", "contract"}
	tier_known(r)
	r.from_s < r.to_s
	is_number(input.now_s)
	count(r.categories) > 0
	every c in r.categories {
		c in purpose.categories
	}
	g := data.broker.catalogue.granularities[r.granularity]
	g >= data.broker.catalogue.granularities[purpose.finest_granularity]
	b := basis(purpose, r, g)
	t := tier(purpose, r, b)
	d := {
		"allow": true,
		"tier": t,
		"granularity": r.granularity,
		"fields_drop": data.broker.catalogue.tiers[t].fields_drop,
		"retention_days": purpose.retention_days,
		"reasons": [{"code": b.code, "message": data.broker.reason_codes[b.code]}],
		"obligations": array.concat(data.broker.catalogue.tiers[t].obligations, b.obligations),
		"consent_ids": b.consent_ids,
	}
}

# The legal basis for this release: the first that holds, consent first (the common case).
# A subject release addresses the customer by id, so it rests only on consents to identified
# data: a pseudonymous consent would let the recipient tie the customer id to the pseudonym it
# follows (C3.3); those customers are served in population releases only.
basis(purpose, r, g) := {"code": "consent", "consent_ids": ids, "obligations": [{"kind": "delete_on_withdrawal", "consent_ids": ids}], "identified": true} if {
	r.scope == "subject"
	input.recipient.kind != "ems"
	purpose.legal_basis == "consent"
	explicit := needs_explicit_b(purpose, g)
	cs := [c | some c in input.consents; c.identified == true; covers(c, r, g); explicit_enough(c, explicit)]
	count(cs) > 0
	ids := sort([c.consent_id | some c in cs])
} else := {"code": "contract", "consent_ids": [], "obligations": [], "identified": true} if {
	r.scope == "subject"
	input.recipient.kind != "ems"
	purpose.legal_basis == "contract"
	input.contract.active == true
	input.contract.recipient == input.recipient.id
} else := {"code": "legal_obligation", "consent_ids": [], "obligations": [], "identified": false} if {
	r.scope == "aggregate"
	purpose.legal_basis == "legal_obligation"
} else := {"code": "aggregate_only", "consent_ids": [], "obligations": [], "identified": false} if {
	r.scope == "aggregate"
	purpose.aggregate_release == true
}

needs_explicit(purpose, _) if purpose.explicit_consent == true

needs_explicit(_, g) if g < data.broker.catalogue.explicit_below_s

explicit_enough(c, _) if c.explicit == true

explicit_enough(_, explicit) if explicit == false

covers(c, r, g) if {
	c.recipient == input.recipient.id
	input.purpose in c.purposes
	every cat in r.categories {
		cat in c.categories
	}
	data.broker.catalogue.granularities[c.granularity] <= g
	input.now_s < c.expires_s
	r.from_s >= c.given_s - (c.history_days * 86400)
	r.to_s <= c.expires_s
}

tier(purpose, r, b) := t if {
	ranks := {
		data.broker.catalogue.tiers[purpose.default_tier].rank,
		agg_rank(r),
		ident_rank(b),
		asked_rank(r),
	}
	t := data.broker.catalogue.tier_order[max(ranks)]
}

agg_rank(r) := 3 if r.scope == "aggregate"
else := 0

ident_rank(b) := 0 if b.identified
else := 1

asked_rank(r) := data.broker.catalogue.tiers[r.tier].rank if r.tier
else := 0

needs_explicit_b(purpose, g) := true if needs_explicit(purpose, g)
else := false

# --- why a request is denied (evaluated only for a denial) ----------------------------------

catalogue := data.broker.catalogue

purpose := catalogue.purposes[input.purpose]

req := input.request

gran_s := catalogue.granularities[req.granularity]

denial_reasons := [{"code": code, "message": data.broker.reason_codes[code]} | some code in sort(deny)] if {
	count(deny) > 0
} else := [{"code": "denied", "message": data.broker.reason_codes.denied}]

deny contains "unknown_purpose" if not purpose

deny contains "missing_scope" if not scope_named

scope_named if {
	req.scope in {"subject", "aggregate"}
	count(req.categories) > 0
	is_string(req.granularity)
	is_number(req.from_s)
	is_number(req.to_s)
	req.from_s < req.to_s
	is_number(input.now_s)
}

deny contains "recipient_not_active" if not input.recipient.status == "active"

deny contains "recipient_not_active" if not is_string(input.recipient.id)

deny contains "recipient_kind_not_allowed" if {
	purpose
	not input.recipient.kind in purpose.recipient_kinds
}

deny contains "unknown_category" if {
	some c in req.categories
	not catalogue.categories[c]
}

deny contains "category_not_for_purpose" if {
	some c in req.categories
	catalogue.categories[c]
	not c in purpose.categories
}

deny contains "unknown_granularity" if {
	req.granularity
	not gran_s
}

deny contains "granularity_too_fine" if gran_s < catalogue.granularities[purpose.finest_granularity]

deny contains "unknown_tier" if {
	req.tier
	not catalogue.tiers[req.tier]
}

# R4.4: whatever the purpose, a household's data never goes to the operator.
deny contains "personal_data_to_operator" if {
	input.recipient.kind == "ems"
	not req.scope == "aggregate"
}

deny contains "personal_data_to_operator" if {
	purpose.legal_basis == "legal_obligation"
	not req.scope == "aggregate"
}

deny contains "legal_basis_unknown" if {
	purpose
	not purpose.legal_basis in {"consent", "legal_obligation", "contract"}
}

deny contains "no_covering_consent" if {
	req.scope == "subject"
	purpose.legal_basis == "consent"
	not covered(false)
}

deny contains "explicit_consent_required" if {
	req.scope == "subject"
	purpose.legal_basis == "consent"
	needs_explicit(purpose, gran_s)
	covered(false)
	not covered(true)
}

# C3.3: consents that cover it (explicit enough) are all pseudonymous.
deny contains "pseudonymous_consent_only" if {
	req.scope == "subject"
	purpose.legal_basis == "consent"
	explicit := needs_explicit_b(purpose, gran_s)
	covered(explicit)
	not covered_identified(explicit)
}

covered(explicit) if {
	some c in input.consents
	covers(c, req, gran_s)
	explicit_enough(c, explicit)
}

covered_identified(explicit) if {
	some c in input.consents
	c.identified == true
	covers(c, req, gran_s)
	explicit_enough(c, explicit)
}

# Aggregates leave without consent only for purposes the catalogue marks aggregate_release (or
# that rest on a legal obligation): never, say, for a consent-based single-customer service.
deny contains "no_aggregate_basis" if {
	req.scope == "aggregate"
	purpose.legal_basis in {"consent", "contract"}
	not purpose.aggregate_release == true
}

deny contains "no_contract" if {
	req.scope == "subject"
	purpose.legal_basis == "contract"
	not contract_holds
}

contract_holds if {
	input.contract.active == true
	input.contract.recipient == input.recipient.id
}

tier_known(r) if not r.tier

tier_known(r) if data.broker.catalogue.tiers[r.tier]
