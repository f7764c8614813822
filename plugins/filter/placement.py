# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The ferry.hypervisor.placement_plan filter (documented in placement_plan.yml)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.plugin_utils.placement import plan


def _check_vms(option, vms):
    """The one check of declared VMs: a list of dicts, each with a name."""
    if not isinstance(vms, list):
        raise AnsibleFilterError('placement_plan: %s must be a list of VMs, got %s' % (option, type(vms).__name__))
    for vm in vms:
        if not isinstance(vm, dict) or not isinstance(vm.get('name'), str):
            raise AnsibleFilterError('placement_plan: %s: each VM must be a dict with a name, got %r' % (option, vm))


def placement_plan(here_vms, here, declared, seen):
    _check_vms('_input', here_vms)
    for option, value in (('declared', declared), ('seen', seen)):
        if not isinstance(value, dict):
            raise AnsibleFilterError('placement_plan: %s must be a dict by host, got %s'
                                     % (option, type(value).__name__))
    for host, vms in declared.items():
        _check_vms('declared[%s]' % host, vms)
    return plan(here, here_vms, declared, seen)


class FilterModule(object):
    def filters(self):
        return {'placement_plan': placement_plan}
