# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The ferry.hypervisor.cpu_baseline filter (documented in cpu_baseline.yml)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.errors import AnsibleFilterError


def _offered(item, position):
    """The features one host offers, from a host_info result or its ``host`` facts."""
    host = item.get('host', item) if isinstance(item, dict) else None
    features = (host or {}).get('cpu', {}).get('features') if isinstance(host, dict) else None
    if not isinstance(features, list):
        raise AnsibleFilterError('cpu_baseline: host %d has no cpu.features; pass ferry.hypervisor.host_info '
                                 'results (from an engine that reports CPU models)' % position)
    return set(features)


def cpu_baseline(hosts):
    if not isinstance(hosts, list) or not hosts:
        raise AnsibleFilterError('cpu_baseline: expected a list of at least one host_info result')
    common = _offered(hosts[0], 1)
    for position, host in enumerate(hosts[1:], 2):
        common &= _offered(host, position)
    return sorted(common)


class FilterModule(object):
    def filters(self):
        return {'cpu_baseline': cpu_baseline}
