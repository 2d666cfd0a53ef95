//! Pathfinder and Path-X (Long Range Arena): is there a path between the two circle markers?
//! Grayscale images read pixel by pixel (L = 32², 64², 128², 256²).
//!
//! ```text
//! layout     DIR/curv_baseline/ (easy, contour length 6), DIR/curv_contour_length_9/ (medium),
//!            DIR/curv_contour_length_14/ (hard); each with imgs/<k>/sample_<i>.png and
//!            metadata/<k>.npy — despite the name, text files: one line per image with
//!            whitespace-separated fields, field 0 the image folder (imgs/<k>), field 1 the file
//!            name, field 3 the label (1: the markers are connected)
//! images     8-bit grayscale PNG, S×S; input (pixel/255 − 0.5)/0.5, t = row·S + col
//! splits     a fixed seeded permutation of all images: 80 % train, 10 % val, 10 % test
//! generator  (Linsley et al.'s rules, our implementation) two snakes of `contour_length` paddles
//!            (each paddle a short straight segment, the direction turning by at most ±30° per
//!            paddle), distractor snakes, no two snakes touching; circle markers on both ends of
//!            snake A (label 1) or on one end of A and one of B (label 0); every image is checked by
//!            a flood fill before it is written
//! ```
//!
//! Images are decoded when a batch needs them (Path-X is 200k × 16 KiB); loading checks that every
//! listed file exists and has the right PNG header.

use crate::DataError;
use crate::tasks::{Batch, InputSpec, SeqTask, Split, TargetSpec, TaskSpec};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Difficulty: the contour length of the snakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difficulty {
    /// Contour length 6 (`curv_baseline`).
    Easy,
    /// Contour length 9 (`curv_contour_length_9`).
    Medium,
    /// Contour length 14 (`curv_contour_length_14`).
    Hard,
}

impl Difficulty {
    /// Parses easy | medium | hard.
    pub fn parse(s: &str) -> Result<Self, DataError> {
        match s {
            "easy" => Ok(Self::Easy),
            "medium" => Ok(Self::Medium),
            "hard" => Ok(Self::Hard),
            other => Err(DataError::Setting {
                field: "difficulty".into(),
                msg: format!("{other:?} is not easy, medium or hard"),
            }),
        }
    }
    /// The LRA folder name.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Easy => "curv_baseline",
            Self::Medium => "curv_contour_length_9",
            Self::Hard => "curv_contour_length_14",
        }
    }
    /// Paddles per snake.
    pub fn contour_length(self) -> usize {
        match self {
            Self::Easy => 6,
            Self::Medium => 9,
            Self::Hard => 14,
        }
    }
}

/// One metadata entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Image path relative to the difficulty folder.
    pub image: PathBuf,
    /// 0 or 1.
    pub label: u8,
}

/// Parses one metadata file's text; `path` names it in errors (with the line and the field).
pub fn parse_metadata(path: &Path, text: &str) -> Result<Vec<Entry>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let at = |msg: String| DataError::File {
            file: format!("{}:{}", path.display(), i + 1),
            msg,
        };
        if f.len() < 4 {
            return Err(at(format!(
                "expected at least 4 whitespace-separated fields (folder, file, _, label), found {}",
                f.len()
            )));
        }
        let label = match f[3] {
            "0" => 0,
            "1" => 1,
            other => return Err(at(format!("field 4 (label): {other:?} is not 0 or 1"))),
        };
        if f[0].contains("..") || f[1].contains("..") || f[1].contains('/') {
            return Err(at(format!(
                "fields 1–2: {:?}/{:?} leave the dataset folder",
                f[0], f[1]
            )));
        }
        out.push(Entry {
            image: Path::new(f[0]).join(f[1]),
            label,
        });
    }
    Ok(out)
}

/// Decodes an 8-bit grayscale PNG of `size × size` pixels.
pub fn decode_png(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>, DataError> {
    let err = |msg: String| DataError::File {
        file: path.display().to_string(),
        msg,
    };
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec
        .read_info()
        .map_err(|e| err(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    if w != size || h != size {
        return Err(err(format!("image is {w}×{h}, expected {size}×{size}")));
    }
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(err(format!(
            "expected 8-bit grayscale, found {:?} at {:?} bits",
            info.color_type, info.bit_depth
        )));
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| err(format!("corrupt PNG data: {e}")))?;
    buf.truncate(frame.buffer_size());
    if buf.len() != size * size {
        return Err(err(format!(
            "decoded {} bytes, expected {}",
            buf.len(),
            size * size
        )));
    }
    Ok(buf)
}

/// Writes an 8-bit grayscale PNG.
pub fn write_png(path: &Path, pixels: &[u8], size: usize) -> Result<(), DataError> {
    let err = |e: String| DataError::File {
        file: path.display().to_string(),
        msg: e,
    };
    let f = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
    let mut enc = png::Encoder::new(BufWriter::new(f), size as u32, size as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| err(e.to_string()))?;
    w.write_image_data(pixels).map_err(|e| err(e.to_string()))
}

/// Pathfinder as a sequence task.
#[derive(Debug, Clone)]
pub struct PathfinderTask {
    root: PathBuf,
    entries: Vec<Entry>,
    size: usize,
    split_idx: [Vec<usize>; 3],
}

impl PathfinderTask {
    /// Reads the metadata of `dir/<difficulty folder>` (or of `dir` itself when it holds
    /// `metadata/`), checks every image's header, and splits 80/10/10 by `seed`.
    pub fn load(
        dir: &Path,
        size: usize,
        difficulty: Difficulty,
        seed: u64,
    ) -> Result<Self, DataError> {
        let root = if dir.join("metadata").is_dir() {
            dir.to_path_buf()
        } else {
            dir.join(difficulty.dir())
        };
        let meta = root.join("metadata");
        let rd = std::fs::read_dir(&meta).map_err(|e| DataError::File {
            file: meta.display().to_string(),
            msg: format!(
                "cannot list the metadata folder (LRA layout: {}/metadata/*.npy): {e}",
                difficulty.dir()
            ),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "npy"))
            .collect();
        // numeric order (0.npy, 1.npy, …, 10.npy)
        files.sort_by_key(|p| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().to_string());
            (stem.as_deref().and_then(|s| s.parse::<u64>().ok()), stem)
        });
        let mut entries = Vec::new();
        for f in &files {
            let raw = std::fs::read(f).map_err(|e| DataError::File {
                file: f.display().to_string(),
                msg: format!("cannot read: {e}"),
            })?;
            let text = std::str::from_utf8(&raw).map_err(|e| DataError::File {
                file: f.display().to_string(),
                msg: format!(
                    "not a text file (invalid UTF-8 at byte {}); LRA writes the metadata as text",
                    e.valid_up_to()
                ),
            })?;
            entries.extend(parse_metadata(f, text)?);
        }
        if entries.is_empty() {
            return Err(DataError::File {
                file: meta.display().to_string(),
                msg: "no images listed".into(),
            });
        }
        for e in &entries {
            check_header(&root.join(&e.image), size)?;
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x9a7f_1dd3));
        let n = order.len();
        let (nv, nt) = (n / 10, n / 10);
        let test = order[..nt].to_vec();
        let val = order[nt..nt + nv].to_vec();
        let train = order[nt + nv..].to_vec();
        Ok(Self {
            root,
            entries,
            size,
            split_idx: [train, val, test],
        })
    }

    fn idx(&self, s: Split) -> &[usize] {
        &self.split_idx[match s {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }]
    }
}

fn check_header(path: &Path, size: usize) -> Result<(), DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::File {
        file: path.display().to_string(),
        msg: format!("listed in the metadata but cannot be opened: {e}"),
    })?;
    let dec = png::Decoder::new(std::io::BufReader::new(f));
    let r = dec.read_info().map_err(|e| DataError::File {
        file: path.display().to_string(),
        msg: format!("not a readable PNG: {e}"),
    })?;
    let info = r.info();
    if info.width as usize != size || info.height as usize != size {
        return Err(DataError::File {
            file: path.display().to_string(),
            msg: format!(
                "image is {}×{}, expected {size}×{size} (task.resolution)",
                info.width, info.height
            ),
        });
    }
    Ok(())
}

impl SeqTask for PathfinderTask {
    fn describe(&self) -> String {
        format!(
            "Pathfinder {}×{} ({}; {} train / {} val / {} test)",
            self.size,
            self.size,
            self.root.display(),
            self.split_idx[0].len(),
            self.split_idx[1].len(),
            self.split_idx[2].len()
        )
    }
    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Real { channels: 1 },
            target: TargetSpec::Class { classes: 2 },
            len: self.size * self.size,
            pair: false,
        }
    }
    fn size(&self, split: Split) -> usize {
        self.idx(split).len()
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        for &i in indices {
            let e = &self.entries[self.idx(split)[i]];
            let p = self.root.join(&e.image);
            let bytes = std::fs::read(&p).map_err(|err| DataError::File {
                file: p.display().to_string(),
                msg: format!("cannot read: {err}"),
            })?;
            let px = decode_png(&p, &bytes, self.size)?;
            batch
                .real
                .extend(px.iter().map(|&v| (v as f32 / 255.0 - 0.5) / 0.5));
            batch.labels.push(e.label as u32);
        }
        Ok(())
    }
}

// =================================================================================================
// Generator
// =================================================================================================

/// Geometry of generated images, scaled with the image size `S` (base 32 px).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    paddle: f64,
    thickness: f64,
    marker: f64,
    gap: f64,
    distractors: usize,
}

impl Geometry {
    fn new(size: usize) -> Self {
        let s = size as f64 / 32.0;
        Self {
            paddle: 2.0 * s,
            thickness: 0.5 * s.max(1.0),
            marker: 1.5 * s,
            gap: 1.0 + s,
            distractors: 2,
        }
    }
}

struct Canvas {
    size: usize,
    px: Vec<u8>,
    /// Which snake owns each pixel (0: none).
    owner: Vec<u16>,
}

impl Canvas {
    fn new(size: usize) -> Self {
        Self {
            size,
            px: vec![0; size * size],
            owner: vec![0; size * size],
        }
    }
    /// Pixels of a disc of radius `r` at (x, y).
    fn disc(&self, x: f64, y: f64, r: f64) -> Vec<usize> {
        let mut out = Vec::new();
        let s = self.size as i64;
        let (x0, x1) = ((x - r).floor() as i64, (x + r).ceil() as i64);
        let (y0, y1) = ((y - r).floor() as i64, (y + r).ceil() as i64);
        for yy in y0.max(0)..=y1.min(s - 1) {
            for xx in x0.max(0)..=x1.min(s - 1) {
                let (dx, dy) = (xx as f64 + 0.5 - x, yy as f64 + 0.5 - y);
                if dx * dx + dy * dy <= r * r {
                    out.push((yy * s + xx) as usize);
                }
            }
        }
        out
    }
    /// Whether a disc of radius `r` at (x, y) is inside and clear of other snakes' pixels.
    fn clear(&self, x: f64, y: f64, r: f64, me: u16) -> bool {
        let s = self.size as f64;
        if x < r || y < r || x > s - r || y > s - r {
            return false;
        }
        self.disc(x, y, r)
            .iter()
            .all(|&p| self.owner[p] == 0 || self.owner[p] == me)
    }
}

/// A snake: `paddles` segments from a random start, turning by at most ±30° each; drawn only if
/// the whole snake stays `gap` away from other snakes. Returns its two ends.
fn snake(
    c: &mut Canvas,
    rng: &mut impl Rng,
    paddles: usize,
    g: &Geometry,
    id: u16,
) -> Option<((f64, f64), (f64, f64))> {
    let s = c.size as f64;
    for _ in 0..200 {
        let (mut x, mut y) = (
            rng.random_range(g.marker + 1.0..s - g.marker - 1.0),
            rng.random_range(g.marker + 1.0..s - g.marker - 1.0),
        );
        let mut angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let start = (x, y);
        let mut pts = vec![(x, y)];
        let mut ok = true;
        for _ in 0..paddles {
            angle += rng.random_range(-30f64.to_radians()..30f64.to_radians());
            let steps = (g.paddle * 2.0).ceil() as usize;
            for k in 1..=steps {
                let t = k as f64 / steps as f64;
                let (px, py) = (
                    x + t * g.paddle * angle.cos(),
                    y + t * g.paddle * angle.sin(),
                );
                if !c.clear(px, py, g.thickness + g.gap, id) {
                    ok = false;
                    break;
                }
                pts.push((px, py));
            }
            if !ok {
                break;
            }
            x += g.paddle * angle.cos();
            y += g.paddle * angle.sin();
        }
        if !ok {
            continue;
        }
        // self-avoidance: points far apart along the path must not come close
        let n = pts.len();
        let min_d = 2.0 * g.thickness + 1.0;
        let step = g.paddle / (g.paddle * 2.0).ceil();
        let skip = (3.0 * min_d / step).ceil() as usize;
        let close = (0..n).any(|i| {
            (i + skip..n).any(|j| {
                let (dx, dy) = (pts[i].0 - pts[j].0, pts[i].1 - pts[j].1);
                dx * dx + dy * dy < min_d * min_d
            })
        });
        if close {
            continue;
        }
        for &(px, py) in &pts {
            for p in c.disc(px, py, g.thickness.max(0.5)) {
                c.px[p] = 255;
                c.owner[p] = id;
            }
        }
        return Some((start, (x, y)));
    }
    None
}

/// 8-connected flood fill over pixels > 0 from `from`; whether it reaches `to`.
pub fn connected(px: &[u8], size: usize, from: usize, to: usize) -> bool {
    if px[from] == 0 || px[to] == 0 {
        return false;
    }
    let mut seen = vec![false; px.len()];
    let mut stack = vec![from];
    seen[from] = true;
    while let Some(p) = stack.pop() {
        if p == to {
            return true;
        }
        let (r, c) = ((p / size) as i64, (p % size) as i64);
        for dr in -1..=1 {
            for dc in -1..=1 {
                let (rr, cc) = (r + dr, c + dc);
                if rr < 0 || cc < 0 || rr >= size as i64 || cc >= size as i64 {
                    continue;
                }
                let q = rr as usize * size + cc as usize;
                if !seen[q] && px[q] > 0 {
                    seen[q] = true;
                    stack.push(q);
                }
            }
        }
    }
    false
}

/// One generated image and its label, with the marker centres (pixel indices).
pub fn generate_image(
    size: usize,
    difficulty: Difficulty,
    label: u8,
    rng: &mut impl Rng,
) -> Option<(Vec<u8>, [usize; 2])> {
    let g = Geometry::new(size);
    for _ in 0..100 {
        let mut c = Canvas::new(size);
        let len = difficulty.contour_length();
        let Some((a0, a1)) = snake(&mut c, rng, len, &g, 1) else {
            continue;
        };
        let Some((b0, _b1)) = snake(&mut c, rng, len, &g, 2) else {
            continue;
        };
        let mut fail = false;
        for k in 0..g.distractors {
            if snake(&mut c, rng, len.div_ceil(2), &g, 3 + k as u16).is_none() {
                fail = true;
            }
        }
        if fail {
            continue;
        }
        let (m0, m1) = if label == 1 { (a0, a1) } else { (a0, b0) };
        for (x, y) in [m0, m1] {
            for p in c.disc(x, y, g.marker) {
                c.px[p] = 255;
            }
        }
        let centre = |(x, y): (f64, f64)| {
            (y.floor() as usize).min(size - 1) * size + (x.floor() as usize).min(size - 1)
        };
        let (p0, p1) = (centre(m0), centre(m1));
        if connected(&c.px, size, p0, p1) == (label == 1) {
            return Some((c.px, [p0, p1]));
        }
    }
    None
}

/// Writes `n` generated images in the LRA layout under `out/<difficulty folder>/` (labels
/// alternate, 1000 images per `imgs/<k>` folder and per `metadata/<k>.npy`).
pub fn generate_dataset(
    out: &Path,
    size: usize,
    difficulty: Difficulty,
    n: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<(), DataError> {
    let root = out.join(difficulty.dir());
    let io = |p: &Path, e: std::io::Error| DataError::File {
        file: p.display().to_string(),
        msg: e.to_string(),
    };
    std::fs::create_dir_all(root.join("metadata")).map_err(|e| io(&root, e))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut meta: Option<(PathBuf, BufWriter<std::fs::File>)> = None;
    for i in 0..n {
        let k = i / 1000;
        if i % 1000 == 0 {
            if let Some((p, mut w)) = meta.take() {
                w.flush().map_err(|e| io(&p, e))?;
            }
            let d = root.join("imgs").join(k.to_string());
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
            let mp = root.join("metadata").join(format!("{k}.npy"));
            let f = std::fs::File::create(&mp).map_err(|e| io(&mp, e))?;
            meta = Some((mp, BufWriter::new(f)));
        }
        let label = (i % 2) as u8;
        let (px, _) = generate_image(size, difficulty, label, &mut rng).ok_or_else(|| {
            DataError::Setting {
                field: "pathfinder".into(),
                msg: format!("could not place the snakes on a {size}×{size} image"),
            }
        })?;
        let name = format!("sample_{}.png", i % 1000);
        write_png(
            &root.join("imgs").join(k.to_string()).join(&name),
            &px,
            size,
        )?;
        let (mp, w) = meta.as_mut().expect("opened above");
        writeln!(
            w,
            "imgs/{k} {name} {} {label} {} {} {}",
            i % 1000,
            difficulty.contour_length(),
            size,
            size
        )
        .map_err(|e| io(mp, e))?;
        progress(i + 1);
    }
    if let Some((p, mut w)) = meta.take() {
        w.flush().map_err(|e| io(&p, e))?;
    }
    Ok(())
}
