#!/usr/bin/env bash
# Set up (scripts/setup.sh), bring up the built-in lab of hypervisor hosts on this
# machine and converge it with playbooks/site.yml over SSH, then show each host's VMs.
#   FERRY_LAB_HOSTS  number of lab hosts (default 3)
#   FERRY_LAB_DIR    where the lab lives (default ./lab)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
export PATH=$root/.venv/bin:$PATH
lab=${FERRY_LAB_DIR:-$root/lab}
if [ ! -f "$lab/lab.json" ]; then
    ferry lab up --hosts "${FERRY_LAB_HOSTS:-3}" --dir "$lab"
fi
ansible-playbook -i "$lab/inventory.yml" playbooks/site.yml
echo
# What each host runs, asked of each host's engine over the lab's SSH.
printf '%-6s %-16s %-8s %5s %8s  %s\n' HOST VM STATE VCPUS MEMORY KVM
for host in $(ferry lab status --dir "$lab" --json | python3 -c 'import json, sys; print(*(h["name"] for h in json.load(sys.stdin)["hosts"]))'); do
    ssh -F "$lab/ssh_config" "$host" /opt/ferry/venv/bin/ferry host-info --json | python3 -c '
import json, sys
info = json.load(sys.stdin)
kvm = info["kvm"].get("flavour", "none")
for vm in info["vms"] or [{"name": "-", "state": "-", "vcpus": "-", "memory": "-"}]:
    memory = "%s MiB" % vm["memory"] if vm["memory"] != "-" else "-"
    print("%-6s %-16s %-8s %5s %8s  %s" % (sys.argv[1], vm["name"], vm["state"], vm["vcpus"], memory, kvm))' "$host"
done
