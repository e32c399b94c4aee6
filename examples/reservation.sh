#!/usr/bin/env bash
# A reservation system's sequence for one reservation, with reimage's exit
# codes: load the computer for the reservation, give the user access from
# their address, wait for the reservation's end, take the access back.
#
#   examples/reservation.sh COMPUTER IMAGE RESERVATION USER KEYFILE ADDRESS [MINUTES]
#
# e.g. examples/reservation.sh pc7 centos7 4711 ann ann.pub 198.51.100.7 120
# 75 from a step means "the computer does not answer now": this script
# tries that step again a few times; 1 is final; 73 means another run has
# the computer.
set -uo pipefail

if [[ $# -lt 6 ]]; then
    echo "usage: $0 COMPUTER IMAGE RESERVATION USER KEYFILE ADDRESS [MINUTES]" >&2
    exit 64
fi
computer=$1 image=$2 reservation=$3 user=$4 key=$5 from=$6 minutes=${7:-60}

# step NAME ARGS...: runs `reimage ARGS...`, again on 75 (up to 5 times,
# a minute apart); returns reimage's last exit code.
step() {
    local name=$1 tries=0 code
    shift
    while :; do
        reimage "$@"
        code=$?
        [[ $code -eq 75 && $tries -lt 5 ]] || break
        tries=$((tries + 1))
        echo "$name: the computer does not answer, again in a minute ($tries/5)" >&2
        sleep 60
    done
    return "$code"
}

step provision provision "$computer" --image "$image" --reservation "$reservation" || {
    echo "provision failed ($?): no computer for reservation $reservation" >&2
    exit 1
}
# --json: the access event says where to connect, for the user's mail.
events=$(mktemp)
trap 'rm -f "$events"' EXIT
if ! step grant --json grant "$computer" --reservation "$reservation" --user "$user" \
    --ssh-key "$key" --from "$from" >"$events"; then
    echo "grant failed: taking back whatever it did" >&2
    step revoke revoke "$computer" --reservation "$reservation" --user "$user"
    exit 1
fi
grep '"kind":"access"' "$events"

sleep "$((minutes * 60))"

# The end: the user's sessions end, the account goes. A revoke that
# cannot reach the computer is made moot by the next provision's load.
step revoke revoke "$computer" --reservation "$reservation" ||
    echo "revoke failed ($?): the next provision of $computer loads it" >&2
