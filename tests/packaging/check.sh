# Run by pk-check.service under the guest's systemd (PID 1), once the scan
# unit has run at boot: reports what the host checks, drives one real NIC
# removal through the packaged udev rule and worker unit, and powers off.
# Lines starting with "PK|" are for the host.
echo "PK|SYSTEMD|$(systemctl --version | head -n 1)|$(cat /proc/1/comm)"
for u in hotplug-hook-scan.service hotplug-hook-reconcile.service; do
    echo "PK|UNIT|$u|$(systemctl is-enabled $u)|$(systemctl show -p ActiveState --value $u)|$(systemctl show -p Result --value $u)|$(systemctl show -p ExecMainStatus --value $u)"
done
echo "PK|NET|$(ls /sys/class/net | tr '\n' ' ')"
for f in /run/hotplug-hook/ifaces/*/*.json; do
    [ -f "$f" ] && { tr -d '\n' < "$f" | sed 's/^/PK|RECORD|/'; echo; }
done
journalctl -b -o cat --no-pager -u hotplug-hook-scan.service | sed 's/^/PK|SCANLOG|/'
echo "PK|PATH|$(command -v hotplug-hook)|$(hotplug-hook --version)"

# reconcile, as its unit runs it after cloud-init: nothing missed.
systemctl start hotplug-hook-reconcile.service
echo "PK|RECONCILE|$(systemctl show -p Result --value hotplug-hook-reconcile.service)|$(systemctl show -p ExecMainStatus --value hotplug-hook-reconcile.service)"
journalctl -b -o cat --no-pager -u hotplug-hook-reconcile.service | sed 's/^/PK|RECONCILELOG|/'

# A real removal: the packaged rule runs `handle`, which starts the worker
# unit with systemctl; the worker runs the command backend.
nic=$(cat /pk/remove-mac)
for a in /sys/class/net/*/address; do
    if [ "$(cat "$a")" = "$nic" ]; then
        dev=$(readlink -f "${a%/address}/device")
        # A virtio NIC's device is virtioN; the PCI function is its parent.
        case "${dev##*/}" in virtio*) dev=${dev%/*} ;; esac
        echo "PK|REMOVE|${a%/address}|$dev"
        echo 1 > "$dev/remove"
    fi
done
i=0
until [ -s /run/pk-worker.log ] || [ $i -ge 120 ]; do sleep 0.5; i=$((i + 1)); done
udevadm settle --timeout=30
echo "PK|WORKER|$(tr '\n' ' ' < /run/pk-worker.log 2>/dev/null)"
sed 's/^/PK|JOURNAL|/' /run/hotplug-hook/journal.jsonl
journalctl -b -o cat --no-pager -u 'hotplug-hook-worker@*' | sed 's/^/PK|WORKERLOG|/'
echo "PK|DONE"
systemctl poweroff -ff
