# Helpers for the real-kernel guest (sourced by init; busybox sh).
#
# /etc/rk/nics (written by the host): "label qemu-model driver mac" per NIC.
# Console protocol (parsed by tests/realkernel.rs), fields split by "|":
#   RK|NIC|label|driver|mac|pci|iface          a NIC as found at boot
#   RK|BEGIN|scenario                          a scenario starts
#   RK|EXPECT|scenario|label|action|verdicts   verdicts: a|b, "?" after the
#                                              action: at most once (optional)
#   RK|EV|scenario|KEY=value<TAB>...           one net uevent the udevd ran rules for
#   RK|J|scenario|{json}                       one new journal line of the hook
#   RK|UDEVD_LOG|scenario|line                 a new udevd log line
#   RK|NOTE|scenario|text                      what the scenario saw
#   RK|END|scenario|ms                         the scenario's wall time
#   RK|SKIP|scenario|why

JOURNAL=/run/hotplug-hook/journal.jsonl
NICS=/etc/rk/nics

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

note() { echo "RK|NOTE|$SCEN|$*"; }

mac_of() { awk -v n="$1" '$1 == n { print $4 }' "$NICS"; }
driver_of() { awk -v n="$1" '$1 == n { print $3 }' "$NICS"; }
labels() { awk '{ print $1 }' "$NICS"; }

# The interface name of a NIC now (by MAC), or nothing.
iface_of() {
    local m a d
    m=$(mac_of "$1")
    for a in /sys/class/net/*/address; do
        if [ "$(cat "$a" 2>/dev/null)" = "$m" ]; then
            d=${a%/address}
            echo "${d##*/}"
            return 0
        fi
    done
    return 1
}

# The PCI function of a NIC (recorded at boot: it stays with the slot).
pci_of() { cat "/run/rk/pci.$1"; }

# The virtio device (virtioN) of a virtio NIC now.
virtio_of() {
    local p
    p=$(readlink -f "/sys/class/net/$(iface_of "$1")/device")
    echo "${p##*/}"
}

# Present NICs driven by a driver.
present_with() {
    local l
    for l in $(labels); do
        [ "$(driver_of "$l")" = "$1" ] && iface_of "$l" >/dev/null && echo "$l"
    done
}

# wait_for present|absent LABEL... (at most 30 s)
wait_for() {
    local want=$1 l i
    shift
    for l in "$@"; do
        i=0
        while :; do
            if iface_of "$l" >/dev/null; then
                [ "$want" = present ] && break
            else
                [ "$want" = absent ] && break
            fi
            i=$((i + 1))
            if [ $i -gt 300 ]; then
                note "timeout waiting for $l to be $want"
                break
            fi
            sleep 0.1
        done
    done
}

# Record each NIC's PCI function and tell the host.
identify_nics() {
    local l ifc p
    for l in $(labels); do
        ifc=$(iface_of "$l") || { echo "RK|NIC|$l|$(driver_of "$l")|$(mac_of "$l")|?|?"; continue; }
        p=$(readlink -f "/sys/class/net/$ifc/device")
        case ${p##*/} in virtio*) p=${p%/*} ;; esac
        echo "${p##*/}" > "/run/rk/pci.$l"
        echo "RK|NIC|$l|$(driver_of "$l")|$(mac_of "$l")|${p##*/}|$ifc"
    done
}

expect() { echo "RK|EXPECT|$SCEN|$1|$2|$3"; }

# expect_back LABEL REMOVE-VERDICTS: a NIC whose net device went away and
# was registered again (kernel name, then udev's rename).
expect_back() {
    expect "$1" remove "$2"
    expect "$1" add device-returned
    expect "$1" move renamed
}

begin() {
    SCEN=$1
    SEQ0=$(cat /sys/kernel/uevent_seqnum)
    JL0=$(wc -l < "$JOURNAL" 2>/dev/null || echo 0)
    UL0=$(wc -l < /run/rk/udevd.log)
    T0=$(uptime_ms)
    echo "RK|BEGIN|$SCEN"
}

settle() {
    sleep 0.5
    udevadm settle --timeout=60
    sleep 0.3
    udevadm settle --timeout=60
}

end() {
    local f s
    settle
    for f in $(ls /run/rk/ev | grep -v tmp | sort -n); do
        s=$f
        [ "$s" -gt "$SEQ0" ] || continue
        echo "RK|EV|$SCEN|$(tr '\n' '\t' < "/run/rk/ev/$f")"
        rm -f "/run/rk/ev/$f"
    done
    [ -f "$JOURNAL" ] && tail -n "+$((JL0 + 1))" "$JOURNAL" | sed "s/^/RK|J|$SCEN|/"
    tail -n "+$((UL0 + 1))" /run/rk/udevd.log | sed "s/^/RK|UDEVD_LOG|$SCEN|/"
    echo "RK|END|$SCEN|$(($(uptime_ms) - T0))"
}

skip() { echo "RK|SKIP|$1|$2"; }

# --- the host's QMP, through the second serial port -------------------------
ctl_open() {
    stty -F /dev/ttyS1 raw -echo 115200
    exec 3<>/dev/ttyS1
    CTL_N=0
}

# qmp del|delnowait|waitdel LABEL, qmp add LABEL MAC: one request, one reply.
qmp() {
    local reply id
    CTL_N=$((CTL_N + 1))
    echo "REQ $CTL_N $*" >&3
    while read -r -t 60 reply <&3; do
        reply=$(echo "$reply" | tr -d '\r')
        set -- $reply
        [ "$1" = ACK ] && [ "$2" = "$CTL_N" ] || continue
        shift 2
        note "qmp #$CTL_N: $*"
        [ "$1" = ok ] && return 0
        return 1
    done
    note "qmp #$CTL_N: no reply"
    return 1
}
