# Shared by the stand-ins for xCAT's nodeset, rpower, nodestat and lsdef
# (sourced, not run). The emulated cluster lives in $XCAT_STANDIN_DIR:
#
#   nodes/NODE/          the node exists (xCAT knows it)
#   nodes/NODE/power     on | off (default: on)
#   nodes/NODE/boot      the nodeset state (default: boot)
#   nodes/NODE/osimage   the osimage of the last `nodeset NODE osimage=`
#   nodes/NODE/t0        when power came on / was reset (microseconds)
#   osimages             the osimages xCAT knows, one a line
#   timeline             what the node does after power on / reset, rows of
#                          MS|NODESTAT|STATUS|NODESET
#                        the last row whose MS has passed applies; NODESET
#                        "-" keeps the nodeset state; {osimage} is replaced.
#                        nodes/NODE/timeline overrides it for one node.
#   fail/rpower          if present, every rpower fails with its text
#   crlf                 if present, output lines end in CR LF
#   calls                every call is appended here
#   log                  "start NODE US" at `nodeset NODE osimage=`, and
#                        "done NODE US" the first time after it that any
#                        stand-in reports the node installed (nodestat
#                        sshd, status booted or nodeset boot)
#
# Before any power on / reset since the last nodeset the node shows what
# it showed before the load: nodestat `sshd`, status `booted` (stale).

LC_ALL=C
D=${XCAT_STANDIN_DIR:?set XCAT_STANDIN_DIR to the stand-in cluster directory}
ME=${0##*/}
echo "$ME $*" >>"$D/calls"

now_us() { echo "${EPOCHREALTIME/./}"; }

# out TEXT...: one line of output, CR LF when the cluster asks for it.
out() {
    if [[ -e $D/crlf ]]; then printf '%s\r\n' "$*"; else printf '%s\n' "$*"; fi
}

# known NODE: true when xCAT knows the node.
known() { [[ -n $1 && -d $D/nodes/$1 ]]; }

# noderange_error NODE: xCAT's answer for a node it does not know.
noderange_error() {
    out "Error: Invalid nodes and/or groups in noderange: $1" >&2
    exit 1
}

# get NODE FILE DEFAULT
get() {
    local f=$D/nodes/$1/$2
    if [[ -s $f ]]; then
        local v
        v=$(<"$f")
        echo "$v"
    else
        echo "$3"
    fi
}

# row NODE: sets NS (nodestat), ST (status) and BT (nodeset state) for now.
row() {
    local n=$1 nd=$D/nodes/$1
    BT=$(get "$n" boot boot)
    if [[ ! -s $nd/t0 ]]; then
        NS=sshd ST=booted
        return
    fi
    local t0 el tl ms ns st bt img
    t0=$(<"$nd/t0")
    el=$(( ($(now_us) - t0) / 1000 ))
    tl=$nd/timeline
    [[ -f $tl ]] || tl=$D/timeline
    NS=noping ST=powering-on
    while IFS='|' read -r ms ns st bt; do
        [[ $ms =~ ^[0-9]+$ ]] || continue
        (( ms <= el )) || break
        NS=$ns ST=$st
        [[ $bt == - || -z $bt ]] || BT=$bt
    done <"$tl"
    img=$(get "$n" osimage "")
    NS=${NS//\{osimage\}/$img}
    BT=${BT//\{osimage\}/$img}
    if [[ ($NS == sshd || $ST == booted || $BT == boot) && ! -e $nd/done ]]; then
        : >"$nd/done"
        echo "done $n $(now_us)" >>"$D/log"
    fi
}
