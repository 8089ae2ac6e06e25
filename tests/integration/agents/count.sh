#!/bin/sh
# Test agent for map-reduce. As a mapper: the item's word count ("bad" items fail
# permanently). As a reducer: "total=<sum of the successful parents' counts> failed=<names>".
payload=$(cat)
if [ -z "$DROVER_PARENTS" ]; then
  case "$payload" in bad*) echo "cannot count '$payload'" >&2; exit 1 ;; esac
  printf '%s' "$payload" | wc -w | tr -d ' \n'
  exit 0
fi
total=0
failed=""
for entry in $DROVER_PARENTS; do
  name=${entry%%=*}
  if [ "${entry#*=}" = succeeded ]; then
    total=$((total + $(cat "$DROVER_PARENTS_DIR/$name")))
  else
    failed="${failed:+$failed,}$name"
  fi
done
printf '%s total=%s failed=%s' "$payload" "$total" "${failed:-none}"
