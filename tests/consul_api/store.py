"""The catalog state of the Consul-API test server: nodes, services, checks and Raft indexes.

Test-only.  It models what HashiCorp documents for the catalog/health endpoints: every write
gets the next Raft index; ``/v1/catalog/services`` reports the index of the services table, and
``/v1/health/service/<name>`` the highest index of anything that affected that service (its
instances, their checks, their nodes, including deletions -- Consul keeps tombstones so that an
index never goes backwards on delete).  Indexes start at 1 and never report 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("passing", "warning", "critical", "maintenance")


class BadRequest(Exception):
    """The request body is invalid (Consul answers 400 with the message)."""


@dataclass
class Node:
    name: str
    address: str
    datacenter: str
    id: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class Service:
    node: str
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    namespace: str = "default"
    partition: str = "default"
    create_index: int = 0
    modify_index: int = 0


@dataclass
class Check:
    node: str
    check_id: str
    name: str
    status: str
    service_id: str = ""
    service_name: str = ""
    notes: str = ""
    output: str = ""
    type: str = ""
    create_index: int = 0
    modify_index: int = 0


def _req_str(body: dict[str, Any], key: str, message: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(message)
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"{what} must be a map of strings")
    return dict(value)


class Store:
    def __init__(self, datacenter: str) -> None:
        self.datacenter = datacenter
        self.index = 1
        self.services_index = 1
        self.service_index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.checks: dict[tuple[str, str], Check] = {}

    # -- indexes ------------------------------------------------------------------------------
    def _bump(self) -> int:
        self.index += 1
        return self.index

    def _touch_service(self, name: str, idx: int) -> None:
        self.service_index[name] = idx

    def _touch_node(self, node: str, idx: int) -> None:
        for service in self.services.values():
            if service.node == node:
                self._touch_service(service.name, idx)

    def catalog_services_index(self) -> int:
        return max(self.services_index, 1)

    def health_service_index(self, name: str) -> int:
        return max(self.service_index.get(name, self.services_index), 1)

    def restore(self, index: int) -> None:
        """Simulate a snapshot restore: every index drops to ``index`` (lower than before)."""
        self.index = index
        self.services_index = min(self.services_index, index)
        self.service_index = {k: min(v, index) for k, v in self.service_index.items()}

    # -- writes (bodies as documented for PUT /v1/catalog/register and deregister) -----------
    def register(self, body: dict[str, Any]) -> None:
        node_name = _req_str(body, "Node", "Must provide node")
        address = _req_str(body, "Address", "Must provide address")
        idx = self._bump()
        node = self.nodes.get(node_name)
        if node is None:
            node = Node(node_name, address, self.datacenter, create_index=idx)
            self.nodes[node_name] = node
        if not body.get("SkipNodeUpdate"):
            before = (node.address, node.id, node.meta, node.tagged_addresses)
            node.address = address
            node.id = str(body.get("ID") or node.id)
            node.meta = _str_map(body.get("NodeMeta"), "NodeMeta") or node.meta
            node.tagged_addresses = _str_map(body.get("TaggedAddresses"), "TaggedAddresses")
            # Like Consul, an identical node re-registration changes nothing (no index bump).
            if node.create_index == idx or before != (
                node.address,
                node.id,
                node.meta,
                node.tagged_addresses,
            ):
                node.modify_index = idx
                self._touch_node(node_name, idx)
        service_body = body.get("Service")
        if service_body is not None:
            self._register_service(node_name, service_body, idx)
        checks = list(body.get("Checks") or [])
        if body.get("Check") is not None:
            checks.append(body["Check"])
        for check_body in checks:
            self._register_check(node_name, check_body, idx)

    def _register_service(self, node: str, body: Any, idx: int) -> None:
        if not isinstance(body, dict):
            raise BadRequest("Service must be an object")
        name = _req_str(body, "Service", "Must provide service name")
        service_id = str(body.get("ID") or name)
        tags = body.get("Tags") or []
        port = body.get("Port", 0)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("Tags must be a list of strings")
        if isinstance(port, bool) or not isinstance(port, int):
            raise BadRequest("Port must be an integer")
        weights = body.get("Weights") or {"Passing": 1, "Warning": 1}
        old = self.services.get((node, service_id))
        service = Service(
            node=node,
            id=service_id,
            name=name,
            tags=list(tags),
            address=str(body.get("Address") or ""),
            port=port,
            meta=_str_map(body.get("Meta"), "Meta"),
            weights={"Passing": int(weights["Passing"]), "Warning": int(weights["Warning"])},
            namespace=str(body.get("Namespace") or "default"),
            partition=str(body.get("Partition") or "default"),
            create_index=old.create_index if old else idx,
            modify_index=idx,
        )
        if old is not None and old.name != name:
            self._touch_service(old.name, idx)
        self.services[(node, service_id)] = service
        self.services_index = idx
        self._touch_service(name, idx)

    def _register_check(self, node: str, body: Any, idx: int) -> None:
        if not isinstance(body, dict):
            raise BadRequest("Check must be an object")
        name = str(body.get("Name") or "")
        check_id = str(body.get("CheckID") or name)
        if not check_id:
            raise BadRequest("Missing check ID")
        status = str(body.get("Status") or "critical")
        if status not in STATUSES:
            raise BadRequest(f"Invalid check status: {status!r}")
        service_id = str(body.get("ServiceID") or "")
        service_name = ""
        if service_id:
            service = self.services.get((node, service_id))
            if service is None:
                raise BadRequest(f"Unknown service ID {service_id!r} for check")
            service_name = service.name
        old = self.checks.get((node, check_id))
        self.checks[(node, check_id)] = Check(
            node=node,
            check_id=check_id,
            name=name or check_id,
            status=status,
            service_id=service_id,
            service_name=service_name,
            notes=str(body.get("Notes") or ""),
            output=str(body.get("Output") or ""),
            type=str(body.get("Type") or ""),
            create_index=old.create_index if old else idx,
            modify_index=idx,
        )
        if service_name:
            self._touch_service(service_name, idx)
        else:
            self._touch_node(node, idx)

    def deregister(self, body: dict[str, Any]) -> None:
        node = _req_str(body, "Node", "Must provide node")
        idx = self._bump()
        service_id, check_id = body.get("ServiceID"), body.get("CheckID")
        if service_id:
            self._drop_service(node, str(service_id), idx)
        if check_id:
            check = self.checks.pop((node, str(check_id)), None)
            if check is not None and check.service_name:
                self._touch_service(check.service_name, idx)
            elif check is not None:
                self._touch_node(node, idx)
        if not service_id and not check_id:
            for key in [k for k in self.services if k[0] == node]:
                self._drop_service(node, key[1], idx)
            for key in [k for k in self.checks if k[0] == node]:
                del self.checks[key]
            self.nodes.pop(node, None)

    def _drop_service(self, node: str, service_id: str, idx: int) -> bool:
        service = self.services.pop((node, service_id), None)
        if service is None:
            return False
        doomed = [k for k, c in self.checks.items() if k[0] == node and c.service_id == service_id]
        for key in doomed:
            del self.checks[key]
        self.services_index = idx
        self._touch_service(service.name, idx)
        return True

    def set_check_status(self, node: str, check_id: str, status: str, output: str = "") -> bool:
        check = self.checks.get((node, check_id))
        if check is None:
            return False
        idx = self._bump()
        check.status, check.output, check.modify_index = status, output, idx
        if check.service_name:
            self._touch_service(check.service_name, idx)
        else:
            self._touch_node(node, idx)
        return True

    # -- reads (JSON shapes as documented) -----------------------------------------------------
    def _node_matches(self, node: Node, node_meta: list[tuple[str, str]]) -> bool:
        return all(node.meta.get(k) == v for k, v in node_meta)

    def _ns_matches(self, service: Service, ns: str, partition: str) -> bool:
        return (ns == "*" or service.namespace == ns) and service.partition == partition

    def catalog_services(
        self, *, node_meta: list[tuple[str, str]], ns: str, partition: str
    ) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for service in self.services.values():
            node = self.nodes[service.node]
            if not self._node_matches(node, node_meta):
                continue
            if not self._ns_matches(service, ns, partition):
                continue
            tags = result.setdefault(service.name, [])
            tags.extend(t for t in service.tags if t not in tags)
        return result

    def health_service(
        self,
        name: str,
        *,
        tags: list[str],
        node_meta: list[tuple[str, str]],
        passing: bool,
        ns: str,
        partition: str,
    ) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for key in sorted(self.services):
            service = self.services[key]
            node = self.nodes[service.node]
            if service.name != name or not self._ns_matches(service, ns, partition):
                continue
            if not set(tags) <= set(service.tags) or not self._node_matches(node, node_meta):
                continue
            checks = [
                c
                for c in self.checks.values()
                if c.node == service.node and c.service_id in ("", service.id)
            ]
            if passing and any(c.status != "passing" for c in checks):
                continue
            entries.append(
                {
                    "Node": self._node_json(node),
                    "Service": self._service_json(service),
                    "Checks": [self._check_json(c, service) for c in checks],
                }
            )
        return entries

    def _node_json(self, node: Node) -> dict[str, Any]:
        return {
            "ID": node.id,
            "Node": node.name,
            "Address": node.address,
            "Datacenter": node.datacenter,
            "TaggedAddresses": node.tagged_addresses or None,
            "Meta": node.meta or None,
            "CreateIndex": node.create_index,
            "ModifyIndex": node.modify_index,
        }

    def _service_json(self, service: Service) -> dict[str, Any]:
        return {
            "ID": service.id,
            "Service": service.name,
            "Tags": list(service.tags) or None,
            "Address": service.address,
            "Meta": service.meta or None,
            "Port": service.port,
            "Weights": dict(service.weights),
            "EnableTagOverride": False,
            "Namespace": service.namespace,
            "Partition": service.partition,
            "CreateIndex": service.create_index,
            "ModifyIndex": service.modify_index,
        }

    def _check_json(self, check: Check, service: Service) -> dict[str, Any]:
        return {
            "Node": check.node,
            "CheckID": check.check_id,
            "Name": check.name,
            "Status": check.status,
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": check.service_id,
            "ServiceName": check.service_name,
            "ServiceTags": list(service.tags) if check.service_id else [],
            "Type": check.type,
            "Namespace": service.namespace,
            "Partition": service.partition,
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        }
