# Sourced by a device call script after it sets T0=$(date +%s) and BUDGET (seconds): `step` prints a
# step's header with the seconds spent so far, `cap N` is the smaller of N and what is left of the
# budget (at least 5 s), so a slow step cannot cost the summary of the next.
step() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s in)"; }
cap() {
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"
}
