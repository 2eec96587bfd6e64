"""The planning context: everything the solve and assemble steps read, computed once from validated PlanInputs.

Per service its model architecture, allowed variants and demand; the offers (price rows or inventory pools) and
MIG layouts; the roofline efficiency fitted to the measured profiles; and every (service, variant, GPU, slice)
replica option evaluated (memory fit, capacity at the SLO). Cross-field input rules are PlanInputs' validators
(inputs.py); what is left here can only be known while building (a model with no known architecture, a variant
list naming an unknown variant).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from vlmopt.hw import mig
from vlmopt.hw.models import ModelArch
from vlmopt.schemas.catalog import GpuCatalog, GpuSpec
from vlmopt.schemas.common import ContractError, Provenance
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.profile import BenchmarkProfile
from vlmopt.schemas.workload import Service, Workload

from . import host as host_model
from . import options, perf, sla
from .errors import PlanInfeasible, PlanInputError
from .inputs import PlanInputs, PlanningOptions
from .milp_model import WHOLE, Layout
from .offers import OfferInfo, cloud_offers, fleet_offers
from .variants import VariantChoice, default_variants, find_manifest, select_variants, variants_from_manifest

GPU_CATALOG_SOURCE = "GPU catalog (vlmopt/data/gpus.yaml)"


@dataclass
class ServiceContext:
    index: int
    service: Service
    arch: ModelArch
    variants: list[VariantChoice]
    excluded: dict[str, str]
    demand_rps: float  # peak after the response cache
    manifest: str | None

    @property
    def where(self) -> str:
        """The service's place in the workload, as error messages name it."""
        return field_path(self.index)


@dataclass
class Context:
    inputs: PlanInputs
    options: PlanningOptions
    services: list[ServiceContext]
    gpus: dict[str, GpuSpec]
    offers: list[OfferInfo]
    layouts: list[Layout]
    evals: list[options.OptionEval]
    efficiency: perf.Efficiency
    provenance: list[Provenance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def workload(self) -> Workload:
        return self.inputs.workload

    @property
    def availability_target(self) -> float:
        return self.inputs.availability_target

    @property
    def mode(self) -> str:
        return self.inputs.mode

    def planned_capacity(self, e: options.OptionEval) -> float:
        """The capacity the plan counts on for an option: the central figure, or with `robust` the low end of its
        error band (the figure itself where no band is known)."""
        if not e.usable:
            return 0.0
        return e.capacity.low if self.options.robust else e.capacity.capacity_rps

    @cached_property
    def eval_of(self) -> dict[tuple[str, str, str, str], options.OptionEval]:
        """(service, variant, GPU, slice) -> that replica option's evaluation."""
        return {(e.service, e.variant, e.gpu, e.slice): e for e in self.evals}


def field_path(service_index: int) -> str:
    return f"services[{service_index}]"


def _resolve_service(
    index: int, service: Service, manifests: Mapping[str, VariantManifest], arch_loader: Callable[[str], ModelArch]
) -> ServiceContext:
    where = field_path(index)
    found = find_manifest(service, manifests)
    arch = None
    errors = []
    for ref in [service.model] + ([found[1].base_model] if found else []):
        try:
            arch = arch_loader(ref)
            break
        except (ContractError, OSError) as exc:
            errors.append(str(exc))
    if arch is None:
        raise PlanInputError(f"{where}.model: {errors[0]}")
    available = variants_from_manifest(*found) if found else default_variants(arch.name, arch.hf_id)
    variants, excluded = select_variants(service, where, available)
    return ServiceContext(
        index, service, arch, variants, excluded, service.peak_rps * (1 - service.response_cache_hit_rate),
        found[0] if found else None,
    )


def gpu_layouts(gpu: GpuSpec, allow_mig: bool) -> list[Layout]:
    """The whole GPU, and with MIG every maximal layout but the one full-GPU instance."""
    out = [Layout(gpu.id, (WHOLE,))]
    if not allow_mig or gpu.mig is None:
        return out
    total = gpu.mig.compute_slices
    for lay in mig.enumerate_layouts(gpu, maximal_only=True):
        if len(lay.profiles) == 1 and gpu.mig_profile(lay.profiles[0]).compute_slices == total:
            continue  # the full-GPU instance is the whole GPU with MIG overhead
        out.append(Layout(gpu.id, tuple(lay.profiles), tuple(lay.starts)))
    return out


def fit_efficiency(
    profiles: Mapping[str, BenchmarkProfile],
    gpus: dict[str, GpuSpec],
    arch_loader: Callable[[str], ModelArch],
    services: list[ServiceContext],
) -> tuple[perf.Efficiency, list[str]]:
    """Fit the engine's calibration to every measured profile on a catalog device whose architecture is known, each
    load point with the host costs its benchmark measured and the batching limits its server ran with
    (`options.observations_for`). GPU profiles calibrate GPU estimates; CPU profiles (a CPU-served engine, as the
    demo's local plan has) are used only when no GPU profile is, from the CPU prior (`host.CPU_PRIOR`)."""
    found: dict[bool, list[perf.Observation]] = {True: [], False: []}
    used: dict[bool, int] = {True: 0, False: 0}
    notes = []
    known_variants = {(sc.arch.name, v.name): (sc.arch, v) for sc in services for v in sc.variants}
    for source, profile in profiles.items():
        if profile.unservable or not profile.points:
            continue  # nothing measured to fit to (the unservable record still makes its option infeasible)
        if profile.device.catalog_id not in gpus:
            notes.append(f"profile {source}: measured on {profile.device.name} (not in the device catalog); not used")
            continue
        gpu = gpus[profile.device.catalog_id]
        arch = variant = None
        for (_, variant_name), (known_arch, known_variant) in known_variants.items():
            if variant_name == profile.variant and (profile.model in (known_arch.name, known_arch.hf_id)
                                                    or options.profile_model_names(profile) & {known_arch.name}):
                arch, variant = known_arch, known_variant
                break
        if arch is None:
            try:
                arch = arch_loader(profile.model)
            except (ContractError, OSError):
                notes.append(f"profile {source}: model {profile.model!r} has no known architecture; not used")
                continue
            variant = VariantChoice(profile.variant, profile.variant_method, profile.variant_scheme, profile.model,
                                    None, None, 0, 1, Provenance(kind="measured", source=source))
        slice_name = profile.device.mig_profile or WHOLE
        try:
            options.share_of(gpu, slice_name)
        except KeyError:
            notes.append(f"profile {source}: {gpu.id} has no MIG profile {slice_name}; not used")
            continue
        observed = options.observations_for(profile, arch, variant, gpu)
        if observed:
            cpu = profile.device.kind == "cpu"
            used[cpu] += 1
            found[cpu] += observed
    cpu = not found[False] and bool(found[True])
    prior = host_model.CPU_PRIOR if cpu else perf.Efficiency()
    if found[False] and found[True]:
        notes.append(f"{used[True]} CPU profile(s) not used to calibrate: GPU profiles calibrate the GPU estimates")
    return perf.fit_efficiency(found[cpu], profiles=used[cpu], prior=prior), notes


def _memoised(loader: Callable[[str], ModelArch]) -> Callable[[str], ModelArch]:
    loaded: dict[str, ModelArch] = {}

    def load(ref: str) -> ModelArch:
        if ref not in loaded:
            loaded[ref] = loader(ref)
        return loaded[ref]

    return load


def _offers(inputs: PlanInputs) -> list[OfferInfo]:
    c = inputs.workload.constraints
    if inputs.mode == "cloud":
        assert inputs.price_catalog is not None  # PlanInputs' rule
        found = cloud_offers(inputs.price_catalog, inputs.gpu_catalog, c, inputs.prices_path)
    else:
        assert inputs.inventory is not None  # PlanInputs' rule
        found = fleet_offers(inputs.inventory, inputs.gpu_catalog, inputs.price_catalog, c, inputs.prices_path)
    if not found:
        raise PlanInfeasible(
            f"no GPU is on offer: the {'price catalog' if inputs.mode == 'cloud' else 'inventory'} has no row for "
            f"the allowed GPUs {c.gpus or 'any'}, clouds {c.clouds or 'any'} and markets {c.markets}"
        )
    return found


def _option_requests(
    services: list[ServiceContext], inputs: PlanInputs, gpus: dict[str, GpuSpec], layouts: list[Layout],
    offered: list[str],
) -> list[options.OptionRequest]:
    """Every (service, variant, GPU, slice) with the measured profiles that match it."""
    measured = options.index_profiles(inputs.profiles, set(gpus))
    slices_of = {g: sorted({s for lay in layouts if lay.gpu == g for s in lay.slices}) for g in offered}
    requests = []
    for sc in services:
        model_names = {sc.service.model, sc.arch.name, sc.arch.hf_id}
        for variant in sc.variants:
            for gpu in offered:
                for slice_name in slices_of[gpu]:
                    matching = [
                        (source, profile) for source, profile in measured.get((variant.name, gpu, slice_name), [])
                        if options.profile_model_names(profile) & model_names
                        or (sc.manifest and profile.manifest == sc.manifest)
                    ]
                    requests.append(options.OptionRequest(sc.service, sc.arch, variant, gpus[gpu], slice_name,
                                                          matching))
    return requests


def build_context(
    inputs: PlanInputs, planning: PlanningOptions, arch_loader: Callable[[str], ModelArch]
) -> Context:
    gpus = {g.id: g for g in inputs.gpu_catalog.gpus}
    arch_loader = _memoised(arch_loader)  # services of one model share one architecture (and its parsed file)
    services = [_resolve_service(i, s, inputs.manifests, arch_loader) for i, s in enumerate(inputs.workload.services)]
    offer_infos = _offers(inputs)
    offered = sorted({o.offer.gpu for o in offer_infos})
    layouts = [lay for g in offered for lay in gpu_layouts(gpus[g], inputs.workload.constraints.allow_mig)]
    efficiency, notes = fit_efficiency(inputs.profiles, gpus, arch_loader, services)
    evals = options.evaluate_options(_option_requests(services, inputs, gpus, layouts, offered), efficiency)
    ctx = Context(inputs, planning, services, gpus, offer_infos, layouts, evals, efficiency, notes=notes)
    ctx.provenance = _provenance(ctx, inputs.gpu_catalog)
    return ctx


def _provenance(ctx: Context, catalog: GpuCatalog) -> list[Provenance]:
    """Every input behind the plan, for plan.inputs."""
    out = [Provenance(kind="user", source=f"workload {ctx.workload.name}")]
    out.append(Provenance(kind="catalog", source=GPU_CATALOG_SOURCE,
                          detail=f"{len(catalog.gpus)} GPUs, every figure sourced in the file"))
    if ctx.mode == "cloud":
        dates = sorted({o.provenance.date or "" for o in ctx.offers})
        out.append(Provenance(kind="catalog", source=ctx.inputs.prices_path, date=dates[-1] if dates else None,
                              detail=f"{len(ctx.offers)} offers used"))
    on_demand = ctx.workload.constraints.on_demand
    fleet = ctx.mode == "fleet"
    for cloud in sorted({o.cloud or "" for o in ctx.offers if o.offer.market != "spot"}):
        down = sla.on_demand_unavailability(cloud or None, on_demand, fleet)
        out.append(Provenance(kind="user" if on_demand.instance_unavailability is not None else "catalog",
                              source=sla.source(cloud or None, on_demand, fleet),
                              date=None if fleet or on_demand.instance_unavailability is not None else sla.RETRIEVED,
                              detail=f"an on-demand {cloud or 'fleet'} instance down {down:.2%} of the time "
                                     "(an SLA floor, not a measured failure rate)" if down else None))
    for source, profile in ctx.inputs.profiles.items():
        out.append(Provenance(kind="measured", source=source, date=profile.finished or profile.started or None,
                              detail=f"{profile.variant} on {profile.device.slug()}"))
    eff = ctx.efficiency
    err = f", latency MAPE {eff.mape:.1%} (prior {eff.mape_prior:.1%})" if eff.mape is not None else ""
    out.append(Provenance(kind="estimated", source="vlmopt roofline performance model",
                          detail=f"{eff.source}: bandwidth x{eff.bandwidth:.3f}, compute x{eff.compute:.3f}{err}"))
    for sc in ctx.services:
        for v in sc.variants:
            out.append(v.fidelity_provenance.model_copy(update={"detail": f"fidelity of {sc.service.name}/{v.name}"}))
    return out
