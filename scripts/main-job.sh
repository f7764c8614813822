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
ansible -i "$lab/inventory.yml" hypervisors -o -m ansible.builtin.command \
    -a "/opt/ferry/venv/bin/ferry list" | sed 's/ | CHANGED | rc=0 | (stdout)/:/; s/\\n/\n    /g'
