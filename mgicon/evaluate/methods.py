"""Registration methods under evaluation, behind one interface.

A method registers the *moving* scan of a test pair to the *fixed* scan and returns a transform mapping fixed
physical points to moving physical points (:mod:`mgicon.io.itk`), so every method is scored by the same code
(:mod:`mgicon.evaluate.scoring`).  Scans are :class:`~mgicon.records.ScanRecord` rows of a ``preprocessed.csv``
(absolute paths): ``image``, ``label``, ``landmarks``, ``mask`` at the original resolution and
``network_image``/``network_mask`` on the network grid.

Methods: ``identity`` (the unregistered scores), ``ground-truth`` (the synthetic suite's exact deformation),
``syn`` (ANTsPy SyN, mutual information) and ``network`` (a trained variant or a released ``.trch``, without IO or
with IO: ``io-lncc2`` = 1 − LNCC², ``io-mind`` = MIND-SSC, Adam at the paper's lr 2e-5 for 50 steps, no loss
randomization).  IO runs on a copy of the network, so the weights are the checkpoint's for every pair.  A network
sees both scans' voxel arrays permuted/flipped to the fixed scan's recorded axis orientation (its dataset's, which
the data stage brought the network volumes to; the scan's own where none is recorded), or with
``keep_orientation`` the arrays as stored in the scans' files (upstream's behaviour), and, with ``affine``, the
moving scan affinely pre-aligned by ANTs (``affine_metric``: :func:`mgicon.register.affine_prealign`'s rule; the
transform is then the composition).  Scores are computed in each
scan's own physical space, so the orientation the network saw never reaches them.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgicon.config import schema_default
from mgicon.data.preprocess import normalization_for
from mgicon.io import itk as itkio
from mgicon.losses import LNCC_SIGMA, get_similarity
from mgicon.network.checkpoint import load_network
from mgicon.network.inference import predict_map
from mgicon.optimize import IO_DICE_WEIGHT, IO_LEARNING_RATE, IO_STEPS, instance_optimize
from mgicon.records import ScanRecord
from mgicon.register import PreparedImage, affine_prealign, prepare
from mgicon.vocabulary import GROUND_TRUTH, IDENTITY, IO_SETTINGS, IO_SIMILARITY, NETWORK, NOIO, SYN


class MethodError(ValueError):
    """A method cannot be built or cannot run a setting; the message names the method and the problem."""


@dataclass
class Registered:
    """One registration: the transform (fixed → moving points) and the seconds it took."""

    transform: Any
    seconds: float


def _masked(image, mask_path: str | None, where: str):
    if not mask_path:
        raise MethodError(f"{where}: masked evaluation needs a mask, the scan has none")
    mask = itkio.read_mask(mask_path, image, where)
    return itkio.from_array(itkio.to_array(image).astype("float32") * mask, like=image)


class Method:
    """Base class: ``register(moving, fixed, masked, io)``; ``fingerprint`` identifies results it can reuse."""

    kind = ""
    io_settings: tuple[str, ...] = (NOIO,)

    def __init__(self, name: str):
        self.name = name

    @property
    def fingerprint(self) -> str:
        return self.kind

    def check_io(self, io: str) -> None:
        if io not in self.io_settings:
            raise MethodError(
                f"method {self.name} ({self.kind}) has no setting {io!r}; it has {list(self.io_settings)}"
            )

    def register(self, moving: ScanRecord, fixed: ScanRecord, masked: bool, io: str) -> Registered:
        raise NotImplementedError


class IdentityMethod(Method):
    """No registration: scores the pair as it is."""

    kind = IDENTITY

    def register(self, moving, fixed, masked, io):
        self.check_io(io)
        return Registered(itkio.identity_transform(), 0.0)


class GroundTruthMethod(Method):
    """The synthetic suite's exact deformation between two scans
    (:func:`mgicon.data.synthetic.ground_truth_transform`)."""

    kind = GROUND_TRUTH

    def register(self, moving, fixed, masked, io):
        from mgicon.data.synthetic import ground_truth_transform

        self.check_io(io)
        start = time.perf_counter()
        transform = ground_truth_transform(moving.to_row(), fixed.to_row(), "/")
        return Registered(transform, time.perf_counter() - start)


class SynMethod(Method):
    """ANTsPy SyN with mutual information and default parameters (:mod:`mgicon.evaluate.ants_syn`)."""

    kind = SYN

    def __init__(self, name: str, seed: int = 0, deterministic: bool = True, threads: int | None = None):
        super().__init__(name)
        self.seed, self.deterministic, self.threads = seed, deterministic, threads

    @property
    def fingerprint(self) -> str:
        return f"syn:{self.seed}:{self.deterministic}"

    def register(self, moving, fixed, masked, io):
        from mgicon.evaluate.ants_syn import syn_register

        self.check_io(io)
        moving_image = itkio.read_image(moving.image)
        fixed_image = itkio.read_image(fixed.image)
        if masked:
            moving_image = _masked(moving_image, moving.mask, moving.image)
            fixed_image = _masked(fixed_image, fixed.mask, fixed.image)
        result = syn_register(
            moving_image, fixed_image, seed=self.seed, deterministic=self.deterministic, threads=self.threads
        )
        return Registered(result.transform, result.seconds)


class NetworkMethod(Method):
    """A GradICON network from a checkpoint (ours, or a released ``.trch`` with ``input_shape``)."""

    kind = NETWORK
    io_settings = IO_SETTINGS

    def __init__(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        device: str = "cpu",
        io_iterations: int = IO_STEPS,
        io_lr: float = IO_LEARNING_RATE,
        seed: int = 0,
        bf16: bool = False,
        input_shape: tuple[int, int, int] | None = None,
        io_lncc_sigma: float = LNCC_SIGMA,
        io_dice_weight: float = IO_DICE_WEIGHT,
        keep_orientation: bool = False,
        affine: bool = False,
        affine_metric: str | None = None,
    ):
        super().__init__(name)
        self.io_lncc_sigma = float(io_lncc_sigma)
        self.io_dice_weight = float(io_dice_weight)  # > 0: IO's Dice term on the scans' label maps (when both have)
        self.keep_orientation, self.affine = bool(keep_orientation), bool(affine)
        # the pre-alignment's metric rule (None: the schema's evaluation.affine_metric)
        self.affine_metric = schema_default("evaluation.affine_metric") if affine_metric is None else affine_metric
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise MethodError(f"{self.checkpoint}: no such checkpoint (method {name})")
        self.net = load_network(self.checkpoint, map_location=device, input_shape=input_shape)
        self.shape = tuple(self.net.config.input_shape)
        self.device = device
        self.io_iterations, self.io_lr, self.seed, self.bf16 = int(io_iterations), float(io_lr), int(seed), bf16

    @property
    def fingerprint(self) -> str:
        stat = self.checkpoint.stat()
        text = (
            f"{self.checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
            f"{self.io_iterations}:{self.io_lr}:{self.seed}"
        )
        if self.io_lncc_sigma != LNCC_SIGMA:
            text += f":{self.io_lncc_sigma}"
        if self.io_dice_weight:
            text += f":dice{self.io_dice_weight}"
        text += ":keep-orientation" if self.keep_orientation else ":reoriented"
        if self.affine:
            text += f":affine-{self.affine_metric}"
        return "network:" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def _prepared(
        self,
        scan: ScanRecord,
        masked: bool,
        image: Any,
        orientation: str | None = None,
        prealign: tuple[Any, Any] | None = None,
        labels: bool = False,
    ) -> PreparedImage:
        """The normalised image on the network grid (the data stage's volume when its shape fits and there is no
        ``prealign``), and its mask, with its voxel array in ``orientation`` (None: as stored in ``image``) as
        :func:`mgicon.register.prepare` gives it; with ``labels``, also its label map (IO's Dice term)."""
        target = itkio.orientation_code(image) if orientation is None else orientation

        def network_array(path: str) -> Any:
            """A data-stage volume's array in ``target`` (its file's direction says how it is stored; resizing
            commutes with the permutation and flips)."""
            volume_image = itkio.read_image(path)
            return itkio.reorient_array(itkio.to_array(volume_image), volume_image, target).astype("float32")

        volume = network_array(scan.network_image) if scan.network_image and prealign is None else None
        if volume is not None and volume.shape == self.shape:
            tensor = torch.from_numpy(volume)[None, None]
            mask = None
            if masked:
                if not scan.network_mask:
                    raise MethodError(f"{scan.image}: masked evaluation needs a mask, the scan has none")
                mask = (torch.from_numpy(network_array(scan.network_mask)) > 0).float()[None, None]
                tensor = tensor * mask
            segmentation = None
            if labels and scan.network_label:
                segmentation = torch.from_numpy(network_array(scan.network_label))[None, None]
            return PreparedImage(image, tensor, mask, itkio.reorient(image, target), None, segmentation)
        if masked and not scan.mask:
            raise MethodError(f"{scan.image}: masked evaluation needs a mask, the scan has none")
        return prepare(
            scan.image,
            normalization_for(scan.modality),
            self.shape,
            scan.mask if masked else None,
            input_masking=masked,
            orientation=orientation,
            prealign=prealign,
            segmentation_path=scan.label if labels else None,
        )

    def register(self, moving, fixed, masked, io):
        self.check_io(io)
        moving_image, fixed_image = itkio.read_image(moving.image), itkio.read_image(fixed.image)
        orientation = None if self.keep_orientation else fixed.orientation or itkio.orientation_code(fixed_image)
        prealign, affine_seconds = None, 0.0
        if self.affine:  # timed: part of the method
            start = time.perf_counter()
            prealign = (affine_prealign(moving_image, fixed_image, self.seed, self.affine_metric), fixed_image)
            affine_seconds = time.perf_counter() - start
        labels = bool(self.io_dice_weight > 0 and IO_SIMILARITY[io] and moving.label and fixed.label)
        moving_prepared = self._prepared(moving, masked, moving_image, orientation, prealign, labels)
        fixed_prepared = self._prepared(fixed, masked, fixed_image, orientation, None, labels)
        a, mask_a, b, mask_b = moving_prepared.tensor, moving_prepared.mask, fixed_prepared.tensor, fixed_prepared.mask
        start = time.perf_counter()
        a, b = a.to(self.device), b.to(self.device)
        similarity = IO_SIMILARITY[io]
        if similarity is None or self.io_iterations == 0:
            phi = predict_map(self.net, a, b, bf16=self.bf16)
        else:
            masks = {}
            if masked:
                masks = {"mask_moving": mask_a.to(self.device), "mask_fixed": mask_b.to(self.device)}
            segmentations = {}
            if labels:
                segmentations = {
                    "segmentation_moving": moving_prepared.segmentation,
                    "segmentation_fixed": fixed_prepared.segmentation,
                    "dice_weight": self.io_dice_weight,
                }
            phi = instance_optimize(
                self.net,
                a,
                b,
                get_similarity(similarity, self.io_lncc_sigma),
                self.io_iterations,
                self.io_lr,
                seed=self.seed,
                bf16=self.bf16,
                **masks,
                **segmentations,
            ).phi_AB
        if a.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start + affine_seconds
        transform = itkio.map_to_transform(phi.detach().cpu(), moving_prepared.frame, fixed_prepared.frame)
        if prealign is not None:
            transform = itkio.compose(prealign[0], transform)
        return Registered(transform, seconds)


def make_method(name: str, kind: str, **options: Any) -> Method:
    """Build a method: ``kind`` ∈ :data:`~mgicon.vocabulary.METHOD_KINDS`; ``options`` are the keyword arguments of
    its class."""
    classes = {IDENTITY: IdentityMethod, GROUND_TRUTH: GroundTruthMethod, SYN: SynMethod, NETWORK: NetworkMethod}
    if kind not in classes:
        raise MethodError(f"method {name}: unknown kind {kind!r}; choose from {list(classes)}")
    return classes[kind](name, **options)
