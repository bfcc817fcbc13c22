# The scenarios (sourced by init; busybox sh). Each one drives the real
# kernel, declares what the hook must say for every event it causes
# (expect LABEL ACTION VERDICTS), and ends with end(), which settles udev and
# prints the events and the hook's new journal lines for the host to compare.
#
# NICs (see tests/realkernel.rs): nic1 virtio_net, nic2 e1000e, nic3 e1000,
# nic4 virtio_net and nic5 e1000e (the hot-plugged ones).

for arg in $(cat /proc/cmdline); do
    case $arg in
        rk.set=*) RK_SET=${arg#rk.set=} ;;
        rk.mode=*) RK_MODE=${arg#rk.mode=} ;;
    esac
done
full() { [ "$RK_SET" = full ]; }

# --- coldplug and replays ----------------------------------------------------

scen_coldplug() {
    local l
    begin coldplug
    udevadm trigger --type=subsystems --action=add
    udevadm trigger --type=devices --action=add
    wait_for present $(labels)
    settle
    identify_nics
    for l in $(labels); do
        expect "$l" add new-device
        expect "$l" move renamed
    done
    end
}

scen_replay() {
    local l
    begin replay
    udevadm trigger --action=add
    for l in $(labels); do expect "$l" add already-known; done
    end
}

scen_scan_replay() {
    local l
    begin scan-replay
    # A boot where `hotplug-hook scan` ran before udev replayed the adds.
    rm -rf /run/hotplug-hook/ifaces
    note "$(hotplug-hook scan 2>&1)"
    udevadm trigger --action=add --subsystem-match=net
    for l in $(labels); do expect "$l" add already-known; done
    end
}

# --- driver reloads ----------------------------------------------------------

# reload NAME DRIVER [up]: modprobe -r and modprobe back; with "up", every NIC
# of the driver is up and has an address first.
scen_reload() {
    local name=$1 drv=$2 up=$3 ls l n=0
    begin "$name"
    ls=$(present_with "$drv")
    if [ "$up" = up ]; then
        for l in $ls; do
            n=$((n + 1))
            ip link set "$(iface_of "$l")" up
            ip addr add "192.0.2.$n/24" dev "$(iface_of "$l")"
        done
    fi
    modprobe -r "$drv"
    modprobe "$drv"
    wait_for present $ls
    # udevd runs the hook 150-500 ms after the uevent: modprobe may have
    # registered the NIC again by then (the remove is then device-returned).
    for l in $ls; do expect_back "$l" "driver-unload|device-returned"; done
    end
}

# --- unbind and bind ---------------------------------------------------------

# rebind NAME LABEL settled|fast: unbind the NIC's device from its driver and
# bind it again, > 1 s apart or back to back.
scen_rebind() {
    local name=$1 l=$2 how=$3 drv dev bus
    drv=$(driver_of "$l")
    begin "$name"
    if [ "$drv" = virtio_net ]; then
        dev=$(virtio_of "$l")
        bus=virtio
    else
        dev=$(pci_of "$l")
        bus=pci
    fi
    echo "$dev" > "/sys/bus/$bus/drivers/$drv/unbind"
    if [ "$how" = settled ]; then
        wait_for absent "$l"
        sleep 1.5
        echo "$dev" > "/sys/bus/$bus/drivers/$drv/bind"
        wait_for present "$l"
        expect_back "$l" driver-unbind
    else
        echo "$dev" > "/sys/bus/$bus/drivers/$drv/bind"
        wait_for present "$l"
        expect_back "$l" "driver-unbind|device-returned"
    fi
    end
}

# The virtio transport: unbind the PCI function from virtio-pci (virtioN goes,
# the PCI function stays), bind it again.
scen_transport_unbind() {
    local l=nic1 pci
    pci=$(pci_of $l)
    begin virtio-pci-unbind
    echo "$pci" > /sys/bus/pci/drivers/virtio-pci/unbind
    wait_for absent $l
    sleep 1.5
    echo "$pci" > /sys/bus/pci/drivers/virtio-pci/bind
    wait_for present $l
    expect_back $l driver-unbind
    end
}

scen_transport_reload() {
    local ls l
    if grep -qw virtio_pci /lib/modules/*/modules.builtin; then
        skip virtio_pci-reload "virtio_pci is built into this kernel"
        return
    fi
    begin virtio_pci-reload
    ls=$(present_with virtio_net)
    modprobe -r virtio_pci
    modprobe virtio_pci
    wait_for present $ls
    for l in $ls; do expect_back "$l" "driver-unload|device-returned"; done
    end
}

# --- network namespaces and renames ------------------------------------------

# netns NAME LABEL back|del: into namespace t, then back by
# `ip -n t link set X netns 1` or by deleting the namespace.
scen_netns() {
    local name=$1 l=$2 how=$3 ifc
    ifc=$(iface_of "$l")
    begin "$name"
    ip netns add t
    ip link set "$ifc" netns t
    wait_for absent "$l"
    sleep 1
    if [ "$how" = back ]; then
        ip -n t link set "$ifc" netns 1
        wait_for present "$l"
        ip netns del t
    else
        ip netns del t
        wait_for present "$l"
    fi
    expect "$l" remove netdev-detached
    expect "$l" add device-returned
    # Back in our namespace the kernel also renames it to its own name:
    # a move with DEVPATH_OLD == DEVPATH.
    expect "$l" move renamed
    end
}

# `ip link set X name rk0`, then a reload under the new name.
scen_rename_reload() {
    local l=nic3 drv
    drv=$(driver_of $l)
    begin rename-then-reload
    ip link set "$(iface_of $l)" down
    ip link set "$(iface_of $l)" name rk0
    settle
    expect $l move renamed
    modprobe -r "$drv"
    modprobe "$drv"
    wait_for present $l
    expect_back $l "driver-unload|device-returned"
    end
}

# --- removal ----------------------------------------------------------------

# echo 1 > /sys/bus/pci/devices/X/remove, then a rescan finds it again.
scen_pci_remove() {
    local name=$1 l=$2 pci
    pci=$(pci_of "$l")
    begin "$name"
    echo 1 > "/sys/bus/pci/devices/$pci/remove"
    wait_for absent "$l"
    sleep 1
    echo 1 > /sys/bus/pci/rescan
    wait_for present "$l"
    expect "$l" remove device-removed
    expect "$l" add new-device
    expect "$l" move renamed
    end
}

# QMP device_del, then device_add with the same MAC or a new one.
scen_unplug() {
    local name=$1 l=$2 newmac=$3 mac
    begin "$name"
    qmp del "$l"
    wait_for absent "$l"
    if [ -n "$newmac" ]; then
        sed -i "s/$(mac_of "$l")\$/$newmac/" "$NICS"
    fi
    mac=$(mac_of "$l")
    qmp add "$l" "$mac"
    wait_for present "$l"
    expect "$l" remove device-removed
    expect "$l" add new-device
    expect "$l" move renamed
    end
}

# An unplug racing a reload of its driver: device_del, and at once
# modprobe -r/modprobe. The other NIC of the driver is a plain reload; the
# unplugged one is gone for good, then plugged back (a new device).
scen_unplug_race() {
    local l=nic4 o ls
    begin unplug-vs-reload
    ls=$(present_with virtio_net)
    qmp delnowait $l
    modprobe -r virtio_net
    modprobe virtio_net
    qmp waitdel $l
    for o in $ls; do
        [ "$o" = $l ] && continue
        wait_for present "$o"
        expect_back "$o" "driver-unload|device-returned"
    done
    wait_for absent $l
    settle
    # The unplugged NIC: the remove the hook saw first is either the unplug
    # or the unload; if the reload re-registered it before the unplug, that
    # add is followed by the unplug's remove.
    expect $l remove "device-removed|driver-unload"
    expect $l add? "device-returned|stale-event"
    expect $l move? "renamed"
    expect $l remove? device-removed
    qmp add $l "$(mac_of $l)"
    wait_for present $l
    expect $l add new-device
    expect $l move renamed
    end
}

# --- late handling: udevd runs the hook after the kernel moved on -----------

scen_late_reload() {
    local drv=$1 ls l
    begin "late-reload-$drv"
    ls=$(present_with "$drv")
    udevadm control --stop-exec-queue
    modprobe -r "$drv"
    modprobe "$drv"
    wait_for present $ls
    udevadm control --start-exec-queue
    for l in $ls; do expect_back "$l" "device-returned|driver-unload"; done
    end
}

scen_late_unload() {
    local drv=$1 ls l
    begin "late-unload-$drv"
    ls=$(present_with "$drv")
    udevadm control --stop-exec-queue
    modprobe -r "$drv"
    sleep 0.5
    udevadm control --start-exec-queue
    settle
    modprobe "$drv"
    wait_for present $ls
    for l in $ls; do expect_back "$l" driver-unload; done
    end
}

# --- the lists ---------------------------------------------------------------

run_all() {
    local i reps
    scen_coldplug
    scen_replay
    scen_scan_replay

    scen_reload reload-virtio_net virtio_net
    scen_reload reload-e1000e e1000e
    scen_reload reload-e1000 e1000
    scen_reload reload-up-e1000e e1000e up
    full && scen_reload reload-up-virtio_net virtio_net up
    full && scen_reload reload-up-e1000 e1000 up

    scen_rebind unbind-settled-virtio_net nic1 settled
    scen_rebind unbind-settled-e1000e nic2 settled
    scen_rebind rebind-fast-virtio_net nic1 fast
    scen_rebind rebind-fast-e1000e nic2 fast
    scen_transport_unbind
    scen_transport_reload

    scen_netns netns-return-e1000e nic2 back
    scen_netns netns-del-virtio_net nic1 del
    full && scen_netns netns-return-virtio_net nic1 back
    full && scen_netns netns-del-e1000e nic2 del
    scen_rename_reload

    scen_pci_remove pci-remove-e1000e nic2
    full && scen_pci_remove pci-remove-virtio_net nic1
    scen_unplug unplug-replug-virtio_net nic4
    scen_unplug unplug-replug-newmac-virtio_net nic4 52:54:00:12:35:04
    full && scen_unplug unplug-replug-e1000e nic5
    full && scen_unplug unplug-replug-newmac-e1000e nic5 52:54:00:12:35:05
    scen_unplug_race

    scen_late_reload virtio_net
    scen_late_unload virtio_net
    scen_late_reload e1000e
    full && scen_late_unload e1000e

    if full; then reps=10; else reps=3; fi
    for i in $(seq "$reps"); do
        scen_reload "reload-virtio_net#$i" virtio_net
        scen_reload "reload-e1000e#$i" e1000e
        full && scen_reload "reload-e1000#$i" e1000
        scen_rebind "rebind-fast-virtio_net#$i" nic1 fast
        scen_rebind "rebind-fast-e1000e#$i" nic2 fast
    done
}
