#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vm_migrate
short_description: Move a Ferry virtual machine to another host, live
version_added: 0.1.0
description:
  - Run against the VM's source host. Prepares a receiver on the destination O(to) through
    that host's own inventory connection, moves the VM (live by default, the guest pausing only
    for the last delta), verifies that it runs on O(to) and nowhere else, and returns the
    engine's report.
  - Idempotent, a VM already on O(to) and not on the source is left alone.
  - Before anything is touched, a pre-flight check compares the two hosts (memory and vCPUs
    on O(to), CPU features, engine and protocol versions) and refuses a move that cannot work,
    naming both numbers; check mode reports the same pre-flight without moving anything.
  - After the handover exactly one copy of the VM runs, whatever fails; a move that fails
    earlier leaves the VM running on the source.
author:
  - Ferry Developers (@ferry)
options:
  name:
    description: The VM to move.
    type: str
    required: true
  to:
    description: The destination, an inventory hostname (reached with its own connection variables).
    type: str
    required: true
  mode:
    description:
      - V(live) copies memory while the guest runs; V(warm) pauses it, copies, resumes on O(to);
        V(cold) moves a stopped VM's definition only.
    type: str
    choices: [live, warm, cold]
    default: live
  max_downtime:
    description: The longest pause the guest may see, in milliseconds; the engine slows the guest until the rest fits.
    type: float
    default: 300
  timeout:
    description: Give up after this many seconds (the VM then stays on the source).
    type: float
    default: 3600
  bandwidth:
    description: A cap for the move, bytes per second with K, M or G (V(500M)); no cap when unset.
    type: str
  transport:
    description:
      - V(tcp) sends over TCP, authenticated by a one-time token the controller makes for this move.
      - V(tls) encrypts the move with mutual TLS; each host proves itself with its certificate
        (O(tls_cert), O(tls_key)) and admits only a peer whose certificate chains to O(tls_ca),
        on top of the token. The source checks the name of O(to)'s certificate against O(address)
        (the V(ansible_host) of O(to)), so an address needs an IP subject alternative name.
      - V(ssh) runs the source's OpenSSH client (C(ssh -W)) to the receiver, which then listens on
        the loopback of O(to) only; the source needs no open port on O(to), only its sshd, and
        its ssh config (C(~/.ssh/config) of the user the module runs as, or O(ssh_config)), agent and
        jump hosts apply. It logs in to O(address) non-interactively, so the source needs a key
        (a file or an agent) that O(to) accepts and the host key of O(to) in its known hosts.
    type: str
    choices: [tcp, tls, ssh]
    default: tcp
  port:
    description:
      - The port the receiver on O(to) listens on; when it is taken (a VM that just arrived keeps
        its port for a minute, to answer a source in doubt), the next free one of the 15 after it.
    type: int
    default: 7400
  address:
    description:
      - The address the source reaches O(to) at; the V(ansible_host) of O(to) when unset.
      - With O(transport=ssh), the host the source's C(ssh) logs in to, which may be a C(Host) of
        its ssh config.
    type: str
  ssh_user:
    description:
      - With O(transport=ssh), the user the source logs in to O(to) as.
      - The V(ansible_user) of O(to) when unset; when that is unset too, the source's ssh config decides.
    type: str
    version_added: 0.2.0
  ssh_port:
    description:
      - With O(transport=ssh), the port of the sshd of O(to).
      - The V(ansible_port) of O(to) when unset; when that is unset too, the source's ssh config decides.
    type: int
    version_added: 0.2.0
  ssh_config:
    description:
      - With O(transport=ssh), an ssh config file on the source to use instead of C(~/.ssh/config)
        (C(ssh -F)).
    type: str
    version_added: 0.2.0
  ssh_options:
    description:
      - With O(transport=ssh), ssh_config options for the source's C(ssh), each V(KEY=VALUE)
        (C(ssh -o)), such as V(ProxyJump=bastion) or V(IdentityFile=/root/.ssh/migrate).
      - They come before the ssh config files, so they win over them.
    type: list
    elements: str
    version_added: 0.2.0
  tls_cert:
    description:
      - With O(transport=tls), the host's own certificate (PEM), at this path on both hosts (each
        host its own file). Required with O(transport=tls).
    type: path
    version_added: 0.2.0
  tls_key:
    description: With O(transport=tls), the private key (PEM) of O(tls_cert), at this path on both hosts.
    type: path
    version_added: 0.2.0
  tls_ca:
    description: With O(transport=tls), the CA certificate (PEM) both hosts' certificates chain to.
    type: path
    version_added: 0.2.0
  step:
    description:
      - Set by the action plugin, which runs this module on each end; not for direct use.
    type: str
    choices: [receive, send]
    default: send
  token:
    description:
      - Set by the action plugin (a new one-time secret for every move); not for direct use.
    type: str
extends_documentation_fragment:
  - ferry.hypervisor.engine
  - ferry.hypervisor.attributes
attributes:
  action:
    support: full
    description: An action plugin on the controller drives both hosts.
  check_mode:
    support: full
    description: Runs the pre-flight (both hosts' facts) and reports it, with the move that would happen; nothing moves.
  diff_mode:
    support: full
    description: Shows which host holds the VM before and after.
notes:
  - Both hosts need the engine (the P(ferry.hypervisor.engine#role) role) and the source must
    reach O(address):O(port) of the destination; with O(transport=ssh), the sshd of O(address) instead.
seealso:
  - module: ferry.hypervisor.host_info
  - module: ferry.hypervisor.vm_info
'''

EXAMPLES = r'''
- name: Move web1 from h1 to h2, live, with at most 50 ms of downtime
  ferry.hypervisor.vm_migrate:
    name: web1
    to: h2
    max_downtime: 50
  delegate_to: h1   # or a play on h1

- name: Move web1 through SSH, the destination reached through a jump host
  ferry.hypervisor.vm_migrate:
    name: web1
    to: h2
    transport: ssh
    ssh_options:
      - ProxyJump=bastion.example.com
  delegate_to: h1

- name: Move it over mutual TLS (each host's certificate at the same path)
  ferry.hypervisor.vm_migrate:
    name: web1
    to: h2
    transport: tls
    tls_cert: /etc/ferry/tls/host.pem
    tls_key: /etc/ferry/tls/host.key
    tls_ca: /etc/ferry/tls/ca.pem
  delegate_to: h1

- name: What would block the move (check mode runs the pre-flight only)
  ferry.hypervisor.vm_migrate:
    name: web1
    to: h2
  check_mode: true
  register: preflight
'''

RETURN = r'''
moved:
  description: Whether the VM moved in this run (false when it was on O(to) already).
  returned: always
  type: bool
preflight:
  description: The pre-flight check, as check mode reports it.
  returned: when the VM was still on the source
  type: dict
  contains:
    blockers:
      description: What refuses the move, one line each (empty when it can go).
      type: list
      elements: str
    warnings:
      description: What would slow it or overcommit O(to).
      type: list
      elements: str
    memory:
      description: C(needed_mib) and C(available_mib) on O(to).
      type: dict
    vcpus:
      description: C(needed), C(committed) and C(cpus) on O(to).
      type: dict
    missing_cpu_features:
      description: CPU flags of the source that O(to) lacks.
      type: list
      elements: str
    estimated_seconds:
      description: A rough time for the move, from the VM's memory size.
      type: float
report:
  description: The engine's migration report.
  returned: when the VM moved
  type: dict
  contains:
    total_ms:
      description: From start to the VM running on O(to).
      type: float
    downtime_ms:
      description: From the pause on the source until the VM runs on O(to).
      type: float
    rounds:
      description: The pre-copy rounds, each with its bytes and time.
      type: list
      elements: dict
    bytes_on_wire:
      description: Bytes sent.
      type: int
vm:
  description: The VM on O(to) after the move, as M(ferry.hypervisor.vm) returns it.
  returned: when the VM is on O(to)
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec, run
from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import (
    MOVE_OPTIONS, MOVE_REQUIRED_IF, MigrationEnd)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            step=dict(type='str', default='send', choices=['receive', 'send']),
            token=dict(type='str', no_log=True),
            **MOVE_OPTIONS
        ),
        required_if=[('step', 'send', ['address'])] + MOVE_REQUIRED_IF,
        supports_check_mode=True,
    )
    run(module, MigrationEnd, predict_without_engine=False)


if __name__ == '__main__':
    main()
