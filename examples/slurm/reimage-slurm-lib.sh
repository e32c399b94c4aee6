# Shared by reimage-resume and reimage-suspend, Slurm's ResumeProgram and
# SuspendProgram for nodes that reimage loads. Sourced, not run.
#
# slurmctld runs both as SlurmUser with every file descriptor closed and an
# environment of SLURM_CONF only (plus SLURM_RESUME_FILE and SLURM_JOB_ID
# for a resume): PATH, the reimage config and the rest come from the
# settings file next to slurm.conf, reimage-slurm.conf (see the one in
# this directory). Output goes to syslog/journald through logger(1), one
# line per node with its exit code.
# shellcheck shell=bash source-path=SCRIPTDIR

# rs_init NAME: settings, standard streams, the log tag. NAME is resume or
# suspend.
rs_init() {
    rs_name=$1
    # slurmctld closed stdin, stdout and stderr; reopen them on /dev/null so
    # that no file this program opens becomes one of them.
    exec </dev/null >/dev/null 2>&1
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
    export SLURM_CONF PATH
    rs_settings=${SLURM_CONF%/*}/reimage-slurm.conf
    if [[ -r $rs_settings ]]; then
        # shellcheck source=reimage-slurm.conf
        . "$rs_settings"
    fi
    : "${REIMAGE:=reimage}" "${FEATURE_PREFIX:=image:}" "${DEFAULT_IMAGE:=}"
    : "${PARALLEL:=8}" "${LOG_TAG:=reimage-slurm}" "${LOG_SOCKET:=}"
    : "${REASON_MAX:=200}"
    [[ -n ${REIMAGE_CONFIG:-} ]] && export REIMAGE_CONFIG
    [[ -n ${REIMAGE_STATE_DIR:-} ]] && export REIMAGE_STATE_DIR
    [[ $PARALLEL =~ ^[1-9][0-9]*$ ]] || PARALLEL=8
}

# log PRIORITY MESSAGE: one line to syslog (daemon facility), tagged with
# LOG_TAG and this program's pid.
log() {
    local args=(-t "$LOG_TAG" "--id=$$" -p "daemon.$1")
    [[ -n $LOG_SOCKET ]] && args+=(--socket "$LOG_SOCKET")
    logger "${args[@]}" -- "$rs_name: $2"
}

# hostnames HOSTLIST: one node name a line (node[01-04] -> node01...).
hostnames() {
    scontrol show hostnames "$1"
}

# image_of NODE: the image named by the node's feature FEATURE_PREFIX-IMAGE
# (Feature=image:rocky9 in slurm.conf), else DEFAULT_IMAGE; nothing when
# neither says.
image_of() {
    local line word feature features=()
    line=$(scontrol -o show node "$1" 2>/dev/null) || line=
    for word in $line; do
        if [[ $word == AvailableFeatures=* ]]; then
            IFS=, read -ra features <<<"${word#AvailableFeatures=}"
        fi
    done
    for feature in "${features[@]}"; do
        if [[ $feature == "$FEATURE_PREFIX"?* ]]; then
            printf '%s\n' "${feature#"$FEATURE_PREFIX"}"
            return 0
        fi
    done
    if [[ -n $DEFAULT_IMAGE ]]; then
        printf '%s\n' "$DEFAULT_IMAGE"
    fi
}

# reason_of FILE CODE: the message of the last `run` event in reimage's
# JSON lines, on one line and at most REASON_MAX characters; "exit CODE"
# when there is none.
reason_of() {
    local r
    r=$(jq -r 'select(.kind == "run") | .message // "" | gsub("\\s+"; " ")' "$1" 2>/dev/null |
        tail -n 1)
    [[ -n $r ]] || r="exit $2, no run event"
    if ((${#r} > REASON_MAX)); then
        r="${r:0:REASON_MAX-3}..."
    fi
    printf '%s\n' "$r"
}

# mark_down NODE REASON: DOWN with the reason, then POWER_DOWN. Slurm
# 22.05 keeps the node POWERING_UP after a plain DOWN, and at ResumeTimeout
# replaces the reason with its own; the power-down clears POWERING_UP (so
# the reason stays) and has the SuspendProgram turn the node off.
mark_down() {
    local out
    if ! out=$(scontrol update nodename="$1" state=down reason="$2" 2>&1); then
        log err "$1: scontrol update state=down failed: $out"
        return 1
    fi
    if [[ $rs_name == resume ]] &&
        ! out=$(scontrol update nodename="$1" state=power_down 2>&1); then
        log warning "$1: scontrol update state=power_down failed: $out"
    fi
}

# for_each_node FUNCTION NODE...: FUNCTION NODE for every node, at most
# PARALLEL at a time; returns 1 when any of them failed.
for_each_node() {
    local fn=$1 node running=0 failed=0
    shift
    for node in "$@"; do
        if ((running >= PARALLEL)); then
            wait -n || failed=1
            running=$((running - 1))
        fi
        "$fn" "$node" &
        running=$((running + 1))
    done
    while ((running > 0)); do
        wait -n || failed=1
        running=$((running - 1))
    done
    return "$failed"
}
