#!/usr/bin/env bash
# Replays the observations in tests/django_scim/BEHAVIOUR.md with curl against a running
# django-scim2 peer that is still empty (as scripts/start-django-scim.sh leaves it: ids are
# counted from "1"). Prints one line per fact: what was asked and the status (or value)
# observed; a line marked `!!` also shows what BEHAVIOUR.md records. Exits 1 if any differ.
# Needs curl and python3 (for reading the JSON).
# Usage: bash tests/django_scim/probe.sh BASE TOKEN
#   e.g. eval "$(bash scripts/start-django-scim.sh /tmp/djs)"
#        bash tests/django_scim/probe.sh "$DJANGO_SCIM_BASE" "$DJANGO_SCIM_TOKEN"
set -euo pipefail

base="${1:?usage: probe.sh BASE TOKEN}"
token="${2:?usage: probe.sh BASE TOKEN}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
same=0
differ=0

# req METHOD PATH [BODY [EXTRA_CURL_ARGS...]]: sets $code; the body is in $tmp/body and the
# headers in $tmp/headers.
req() {
  local method="$1" path="$2" body="${3:-}"
  shift 2
  if [ $# -gt 0 ]; then shift; fi
  local args=(-s -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}'
    -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' "$@")
  [ -n "$body" ] && args+=(--data-binary "$body")
  code="$(curl "${args[@]}" "$base$path")"
}

# js EXPR: EXPR in Python over the response body as `d` (None when empty), printed as JSON;
# `<KeyError 'id'>` and the like when the body has no such thing.
js() {
  python3 -c 'import json, sys
text = open(sys.argv[1]).read()
try:
    d = json.loads(text) if text.strip() else None
    print(json.dumps(eval(sys.argv[2]), separators=(",", ":")))
except Exception as e:
    print(f"<{type(e).__name__} {e}>")' "$tmp/body" "$1"
}

# header NAME: the response header's value, or "-" when it is absent.
header() {
  local v
  v="$(tr -d '\r' <"$tmp/headers" | sed -n "s/^$1: //Ip" | head -n 1)"
  echo "${v:--}"
}

# check WHAT OBSERVED RECORDED
check() {
  if [ "$2" = "$3" ]; then
    same=$((same + 1))
    printf '   %s: %s\n' "$1" "$2"
  else
    differ=$((differ + 1))
    printf '!! %s: %s (BEHAVIOUR.md: %s)\n' "$1" "$2" "$3"
  fi
}

patch_op() { echo "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[$1]}"; }
user() {
  echo "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"$1\",
    \"name\":{\"givenName\":\"Given $1\",\"familyName\":\"Family $1\"},\"displayName\":\"The $1\",
    \"emails\":[{\"value\":\"$1@example.org\",\"primary\":true}],\"active\":true,\"externalId\":\"ext-$1\"}"
}
group='{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]'

echo "== authentication and ServiceProviderConfig"
code="$(curl -s -o /dev/null -w '%{http_code}' "$base/ServiceProviderConfig")"
check "GET /ServiceProviderConfig without a token" "$code" 401
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "$base/ServiceProviderConfig")"
check "GET /ServiceProviderConfig with a wrong token" "$code" 401
req GET /ServiceProviderConfig
check "GET /ServiceProviderConfig" "$code" 200
check "  patch/bulk/filter/sort/etag supported" \
  "$(js '[d[k]["supported"] for k in ("patch","bulk","filter","sort","etag")]')" '[true,false,false,false,false]'
check "  filter.maxResults" "$(js 'd["filter"]["maxResults"]')" 50
check "  Connection header" "$(header Connection)" close
check "  Content-Length header" "$(header Content-Length)" -

echo "== Users"
req POST /Users "$(user alice)"
check "POST /Users alice" "$code" 201
check "  id" "$(js 'd["id"]')" '"1"'
check "  meta.location" "$(js 'd["meta"]["location"]')" "\"$base/Users/1\""
check "  Location header" "$(header Location)" "$base/Users/1"
check "  ETag header" "$(header ETag)" -
check "  displayName, name.formatted" "$(js '[d["displayName"], d["name"]["formatted"]]')" \
  '["The alice","Given alice Family alice"]'
req POST /Users "$(user bob)"
check "POST /Users bob" "$code" 201
check "  id" "$(js 'd["id"]')" '"2"'
req POST /Users "$(user carol)"
check "POST /Users carol" "$code" 201
req POST /Users "$(user alice)"
check "POST /Users alice again" "$code" 409
check "  error body: status a number, no scimType" "$(js '[d["status"], "scimType" in d]')" '[409,false]'
req POST /Users "$(user ALICE)"
check "POST /Users ALICE (userName differs in case only)" "$code" 201
ALICE="$(js 'd["id"]' | tr -d '"')"
req DELETE "/Users/$ALICE"
check "DELETE /Users/$ALICE (ALICE)" "$code" 204
req GET /Users/1
check "GET /Users/1" "$code" 200
check "  ETag header" "$(header ETag)" -
req GET /Users/99
check "GET /Users/99" "$code" 404
req GET '/Users?filter=userName%20eq%20%22BOB%22'
check "GET /Users?filter=userName eq \"BOB\" (case-insensitive)" "$(js '[d["totalResults"], [r["id"] for r in d["Resources"]]]')" '[1,["2"]]'
req GET '/Users?filter=externalId%20eq%20%22ext-bob%22'
check "GET /Users?filter=externalId eq \"ext-bob\"" "$code $(js 'd["totalResults"]')" "200 0"
req GET '/Users?filter=active%20eq%20true'
check "GET /Users?filter=active eq true" "$code $(js 'd["totalResults"]')" "200 0"
req GET '/Users?filter=userName%20eq'
check "GET /Users?filter=userName eq (malformed)" "$code" 400

echo "== PATCH /Users"
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"active","value":false}')"
check "replace active false" "$code $(js 'd["active"]')" "200 false"
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"active","value":"true"}')"
check "replace active \"true\" (a string)" "$code" 400
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"userName","value":"alice2"}')"
check "replace userName" "$code $(js 'd["userName"]')" '200 "alice2"'
req PATCH /Users/1 "$(patch_op '{"op":"replace","value":{"userName":"alice","active":true,"name.givenName":"Al","displayName":"Al A."}}')"
check "replace without path (userName, active, name.givenName, displayName)" \
  "$code $(js '[d["userName"], d["active"], d["name"]["givenName"], d["displayName"]]')" '200 ["alice",true,"Al","Al A."]'
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"emails","value":[{"value":"al@example.org","primary":true}]}')"
check "replace emails" "$code $(js 'd["emails"]')" '200 [{"value":"al@example.org","primary":true}]'
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"externalId","value":"x"}')"
check "replace externalId" "$code" 501
req PATCH /Users/1 "$(patch_op '{"op":"add","path":"displayName","value":"x"}')"
check "add displayName" "$code" 501
req PATCH /Users/1 "$(patch_op '{"op":"remove","path":"displayName"}')"
check "remove displayName" "$code" 501
req PATCH /Users/1 "$(patch_op '{"op":"replace","path":"userName","value":"bob"}')"
check "replace userName with bob's" "$code" 500
check "  error detail" "$(js 'd["detail"]')" '"Exception occurred while processing the SCIM request"'
req GET /Users/1
check "  meta.lastModified after the PATCHes" "$(js 'd["meta"]["lastModified"] == d["meta"]["created"]')" true
req PUT /Users/3 '{"userName":"carol"}' -H 'If-Match: W/"no-such-version"'
check "PUT /Users/3 {userName} with a stale If-Match" "$code" 200
check "  names, externalId, emails, active after" \
  "$(js '[d["name"]["givenName"], d["externalId"], d["emails"][0]["value"], d["active"]]')" '["","","carol@example.org",true]'

echo "== Groups"
req POST /Groups "$group,\"displayName\":\"devs\",\"externalId\":\"g-devs\",\"members\":[{\"value\":\"1\"}]}"
check "POST /Groups devs with members [1]" "$code" 201
check "  id, members" "$(js '[d["id"], d["members"]]')" '["1",[]]'
req POST /Groups "$group,\"displayName\":\"devs\"}"
check "POST /Groups devs again" "$code" 409
req PATCH /Groups/1 "$(patch_op '{"op":"add","path":"members","value":[{"value":"1"},{"value":"2"}]}')"
check "add members [1,2]" "$code $(js '[m["value"] for m in d["members"]]')" '200 ["1","2"]'
req PATCH /Groups/1 "$(patch_op '{"op":"remove","path":"members[value eq \"1\"]"}')"
check "remove path members[value eq \"1\"]" "$code $(js '[d["detail"], d["status"]]')" '501 ["",501]'
req PATCH /Groups/1 "$(patch_op '{"op":"remove","path":"members","value":[{"value":"1"}]}')"
check "remove path members value [1]" "$code $(js '[m["value"] for m in d["members"]]')" '200 ["2"]'
req PATCH /Groups/1 "$(patch_op '{"op":"remove","path":"members","value":[{"value":"3"}]}')"
check "remove members [3] (exists, not a member)" "$code" 200
req PATCH /Groups/1 "$(patch_op '{"op":"remove","path":"members"}')"
check "remove path members without a value (RFC 7644: all of them)" "$code $(js '[m["value"] for m in d["members"]]')" '200 ["2"]'
req PATCH /Groups/1 "$(patch_op '{"op":"add","value":{"members":[{"value":"3"}]}}')"
check "add without path, value {members: [3]}" "$code $(js '[m["value"] for m in d["members"]]')" '200 ["2","3"]'
req PATCH /Groups/1 "$(patch_op '{"op":"Remove","path":"members","value":[{"value":"3"}]}')"
check "Remove (capitalised op) members [3]" "$code $(js '[m["value"] for m in d["members"]]')" '200 ["2"]'
req PATCH /Groups/1 "$(patch_op '{"op":"remove","path":"members","value":[{"value":"999"}]}')"
check "remove members [999] (no such user)" "$code" 400
req PATCH /Groups/1 "$(patch_op '{"op":"add","path":"members","value":[{"value":"999"}]}')"
check "add members [999] (no such user)" "$code" 400
req PATCH /Groups/1 "$(patch_op '{"op":"add","path":"members","value":[{"value":"3"}]},{"op":"add","path":"members","value":[{"value":"999"}]}')"
check "add members [3], then [999], in one PATCH" "$code" 400
req GET /Groups/1
check "  members after (the PATCH is undone whole)" "$(js '[m["value"] for m in d["members"]]')" '["2"]'
req PATCH /Groups/1 "$(patch_op '{"op":"add","path":"members","value":[{"value":"abc"}]}')"
check "add members [\"abc\"] (not a number)" "$code" 500
req PATCH /Groups/1 "$(patch_op '{"op":"remove"}')"
check "remove without path (RFC 7644: 400 noTarget)" "$code $(js '"scimType" in d')" "500 false"
req PATCH /Groups/1 "$(patch_op '{"op":"move","path":"members"}')"
check "op move" "$code" 400
req PATCH /Groups/1 "$(patch_op '{"op":"replace","path":"members","value":[{"value":"3"}]}')"
check "replace members" "$code" 501
req PATCH /Groups/1 "$(patch_op '{"op":"replace","path":"displayName","value":"devs3"}')"
check "replace displayName" "$code" 501
req PUT /Groups/1 "$group,\"displayName\":\"devs2\",\"members\":[{\"value\":\"3\"}]}"
check "PUT /Groups/1 devs2 with members [3]" "$code" 200
check "  displayName, members, externalId" "$(js '[d["displayName"], [m["value"] for m in d["members"]], d["externalId"]]')" '["devs2",["2"],""]'
req GET /Users/2
check "GET /Users/2: groups" "$(js '[g["value"] for g in d["groups"]]')" '["1"]'
req GET '/Groups?filter=displayName%20eq%20%22devs2%22'
check "GET /Groups?filter=displayName eq \"devs2\"" "$code $(js 'd["totalResults"]')" "200 0"

echo "== paging, Bulk, Me"
# ALICE's id (4) stays unused: these get ids 5 to 56.
for i in $(seq 4 55); do
  req POST /Users "$(user "user$i")"
  [ "$code" = 201 ] || { check "POST /Users user$i" "$code" 201; break; }
done
req GET /Users
check "GET /Users (55 users)" "$code $(js '[d["totalResults"], d["itemsPerPage"], d["startIndex"]]')" "200 [55,50,1]"
check "  first ids" "$(js '[r["id"] for r in d["Resources"][:5]]')" '["1","10","11","12","13"]'
req GET '/Users?startIndex=51&count=10'
check "GET /Users?startIndex=51&count=10: ids" "$(js '[r["id"] for r in d["Resources"]]')" '["56","6","7","8","9"]'
req GET '/Users?startIndex=0'
check "GET /Users?startIndex=0" "$code" 400
req POST /Bulk '{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[]}'
check "POST /Bulk (empty body back)" "$code $(js 'd')" "501 null"
req GET /Me
check "GET /Me" "$code" 501
req DELETE /Groups/1
check "DELETE /Groups/1" "$code" 204
req GET /Groups/1
check "GET /Groups/1 after" "$code" 404

echo "probe: $same as recorded, $differ differ"
[ "$differ" = 0 ]
