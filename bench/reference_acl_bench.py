"""Times the networking-vpp reference translation (benchmark (a) of issue 3).

Usage: python3 reference_acl_bench.py GROUPS.jsonl [--repeat N]

GROUPS.jsonl holds one security group a line: {"id": ..., "rules": [...]}.
Loads every group first, then times in-process with time.perf_counter:
  translate       get_secgroup_from_rules + the value send_secgroup_to_agents
                  builds (the rules' _asdict()), for every group;
  translate_json  the same plus json.dumps of each group value.
Prints one JSON object: {"rules": n, "groups": g, "translate_s": [...],
"translate_json_s": [...], "python": version}.

The reference code is test/fixtures/reference_acl.py (networking-vpp,
Apache-2.0), imported from there.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'test', 'fixtures'))
from reference_acl import VPPMechanismDriver  # noqa: E402


def translate(driver, groups):
    t = time.perf_counter()
    for g in groups:
        driver.send_secgroup_to_agents(
            driver.get_secgroup_from_rules(g['id'], g['rules']))
    return time.perf_counter() - t


def translate_json(driver, groups):
    dumps = json.dumps
    t = time.perf_counter()
    for g in groups:
        dumps(driver.send_secgroup_to_agents(
            driver.get_secgroup_from_rules(g['id'], g['rules'])))
    return time.perf_counter() - t


def main():
    path = sys.argv[1]
    repeat = 1
    if '--repeat' in sys.argv:
        repeat = int(sys.argv[sys.argv.index('--repeat') + 1])
    with open(path, encoding='utf-8') as f:
        groups = [json.loads(line) for line in f if line.strip()]
    driver = VPPMechanismDriver()
    rules = sum(len(g['rules']) for g in groups)
    out = {'rules': rules, 'groups': len(groups), 'translate_s': [],
           'translate_json_s': [], 'python': sys.version.split()[0]}
    for _ in range(repeat):
        out['translate_s'].append(translate(driver, groups))
        out['translate_json_s'].append(translate_json(driver, groups))
    print(json.dumps(out))


if __name__ == '__main__':
    main()
