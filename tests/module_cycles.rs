//! The crate's modules form no import cycle (ARCHITECTURE.md, "Layers").
//!
//! Every source file under `src/` is a node; an edge A → B means a path
//! written in A (a `use`, or a `crate::`/`super::`/`self::`/child-module path
//! in code) names an item *defined* in B. Re-exports are followed to the
//! file that defines the item, so a `mod.rs` that only re-exports its
//! children is no knot by itself, while a child that reaches back up for
//! something its parent defines is. Test-only code (`#[cfg(test)]`) is left
//! out: tests beside the code may use anything. Parsing is syn's; the cycle
//! search is petgraph's strongly connected components.
//!
//! On failure the message lists each cycle with, for every edge in it, the
//! first path that made it, which is where to start untying it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;
use syn::visit::Visit;

type ModPath = Vec<String>;

/// One source file's module: what it declares and what it names.
#[derive(Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// Items defined here (types, functions, constants, traits, macros).
    items: BTreeSet<String>,
    /// `use` bindings: local name → absolute path.
    bindings: HashMap<String, ModPath>,
    /// Absolute paths named by this file's code and `use` items.
    named: Vec<ModPath>,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .map(|m| m.path().is_ident("test"))
                .unwrap_or(false)
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Walks the module tree from `lib.rs`, following `mod x;` declarations.
fn load(src: &Path) -> BTreeMap<ModPath, (Module, syn::File)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(Vec::new(), src.join("lib.rs"))];
    while let Some((path, file)) = todo.pop() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        // Children of `a.rs` live in `a/`, of `a/mod.rs` and `lib.rs` beside it.
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs") | Some("lib.rs") => file.parent().unwrap().to_path_buf(),
            _ => file.with_extension(""),
        };
        let mut module = Module {
            file: file.clone(),
            ..Module::default()
        };
        for item in &ast.items {
            if let syn::Item::Mod(m) = item {
                if is_test_only(&m.attrs) {
                    continue;
                }
                let name = m.ident.to_string();
                module.children.insert(name.clone());
                if m.content.is_none() {
                    let child_file = match path_attr(&m.attrs) {
                        Some(p) => file.parent().unwrap().join(p),
                        None if dir.join(format!("{name}.rs")).exists() => {
                            dir.join(format!("{name}.rs"))
                        }
                        None => dir.join(&name).join("mod.rs"),
                    };
                    let mut child = path.clone();
                    child.push(name);
                    todo.push((child, child_file));
                }
            }
        }
        out.insert(path, (module, ast));
    }
    out
}

/// Turns a written path into an absolute one, or `None` for another crate's.
fn absolute(
    here: &ModPath,
    children: &BTreeSet<String>,
    bindings: &HashMap<String, ModPath>,
    segs: &[String],
) -> Option<ModPath> {
    let first = segs.first()?;
    let mut base: ModPath = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => {
            let mut b = here.clone();
            let mut rest = segs;
            while rest.first().map(String::as_str) == Some("super") {
                b.pop();
                rest = &rest[1..];
            }
            b.extend(rest.iter().cloned());
            return Some(b);
        }
        name if children.contains(name) => {
            let mut b = here.clone();
            b.push(name.to_string());
            b.extend(segs[1..].iter().cloned());
            return Some(b);
        }
        name => {
            let mut b = bindings.get(name)?.clone();
            b.extend(segs[1..].iter().cloned());
            return Some(b);
        }
    };
    base.extend(segs[1..].iter().cloned());
    Some(base)
}

fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, ModPath)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            let name = n.ident.to_string();
            if name != "self" {
                full.push(name.clone());
            }
            let local = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                name
            };
            out.push((local, full));
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push((r.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => out.push(("*".to_string(), prefix.clone())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// Collects the paths a file's code writes, skipping test-only items.
struct Paths<'a> {
    out: &'a mut Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Struct(s) => &s.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {}
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            self.out
                .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, p);
    }
}

fn item_name(item: &syn::Item) -> Option<String> {
    Some(match item {
        syn::Item::Const(i) => i.ident.to_string(),
        syn::Item::Enum(i) => i.ident.to_string(),
        syn::Item::Fn(i) => i.sig.ident.to_string(),
        syn::Item::Static(i) => i.ident.to_string(),
        syn::Item::Struct(i) => i.ident.to_string(),
        syn::Item::Trait(i) => i.ident.to_string(),
        syn::Item::Type(i) => i.ident.to_string(),
        syn::Item::Union(i) => i.ident.to_string(),
        syn::Item::Macro(i) => i.ident.as_ref()?.to_string(),
        _ => return None,
    })
}

/// Fills each module's items, bindings and named paths.
fn analyse(mods: &mut BTreeMap<ModPath, (Module, syn::File)>) {
    let keys: Vec<ModPath> = mods.keys().cloned().collect();
    for key in keys {
        let (module, ast) = mods.get_mut(&key).unwrap();
        let mut uses = Vec::new();
        for item in &ast.items {
            if let syn::Item::Use(u) = item {
                if !is_test_only(&u.attrs) {
                    use_leaves(&u.tree, &mut Vec::new(), &mut uses);
                }
            }
            if let Some(name) = item_name(item) {
                module.items.insert(name);
            }
        }
        // Bindings first (a use may name a sibling binding), then paths.
        let empty = HashMap::new();
        for (local, written) in &uses {
            if let Some(abs) = absolute(&key, &module.children, &empty, written) {
                if local != "*" {
                    module.bindings.insert(local.clone(), abs.clone());
                }
                module.named.push(abs);
            }
        }
        let mut written = Vec::new();
        Paths { out: &mut written }.visit_file(ast);
        for segs in written {
            if let Some(abs) = absolute(&key, &module.children, &module.bindings, &segs) {
                module.named.push(abs);
            }
        }
    }
}

/// The module whose file defines what `path` names, following re-exports.
fn defining(
    mods: &BTreeMap<ModPath, (Module, syn::File)>,
    path: &[String],
    depth: u32,
) -> Option<ModPath> {
    if depth > 32 {
        return None;
    }
    let mut here: ModPath = Vec::new();
    for (i, seg) in path.iter().enumerate() {
        let (module, _) = mods.get(&here)?;
        if module.children.contains(seg)
            && mods.contains_key(&[here.clone(), vec![seg.clone()]].concat())
        {
            here.push(seg.clone());
            continue;
        }
        if module.items.contains(seg) {
            return Some(here);
        }
        if let Some(target) = module.bindings.get(seg) {
            let mut next = target.clone();
            next.extend(path[i + 1..].iter().cloned());
            return defining(mods, &next, depth + 1).or(Some(here));
        }
        // An inline module, an enum variant or a macro-made item: this file.
        return Some(here);
    }
    // The path names a module itself: no item of it is used yet.
    None
}

fn name(p: &ModPath) -> String {
    if p.is_empty() {
        "crate".into()
    } else {
        p.join("::")
    }
}

/// The cycles among the modules under `src` (from its `lib.rs`), each with
/// the edges inside it; empty when there are none.
fn cycles(src: &Path) -> (usize, String) {
    let mut mods = load(src);
    analyse(&mut mods);

    let mut graph = DiGraph::<ModPath, ()>::new();
    let nodes: HashMap<ModPath, _> = mods
        .keys()
        .map(|k| (k.clone(), graph.add_node(k.clone())))
        .collect();
    let mut why: BTreeMap<(ModPath, ModPath), String> = BTreeMap::new();
    for (key, (module, _)) in &mods {
        for named in &module.named {
            let Some(target) = defining(&mods, named, 0) else {
                continue;
            };
            if &target != key && !why.contains_key(&(key.clone(), target.clone())) {
                graph.add_edge(nodes[key], nodes[&target], ());
                why.insert((key.clone(), target.clone()), named.join("::"));
            }
        }
    }

    let mut report = String::new();
    for scc in tarjan_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<ModPath> = scc.iter().map(|&n| graph[n].clone()).collect();
        report.push_str(&format!("cycle of {} modules:\n", members.len()));
        for ((from, to), path) in &why {
            if members.contains(from) && members.contains(to) {
                report.push_str(&format!(
                    "  {} -> {}  ({} in {})\n",
                    name(from),
                    name(to),
                    path,
                    mods[from].0.file.display()
                ));
            }
        }
    }
    (mods.len(), report)
}

#[test]
fn no_import_cycles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, report) = cycles(&src);
    assert!(modules > 20, "module tree not found under {src:?}");
    assert!(report.is_empty(), "import cycles:\n{report}");
}

/// The check itself sees what it must: a child reaching back up for what
/// its parent defines, a cycle through a re-export and a `super::` path
/// in code; and it leaves alone a facade that only re-exports.
#[test]
fn the_check_finds_cycles_and_passes_facades() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write("a.rs", "mod inner;\npub use inner::Thing;\n");
    write("a/inner.rs", "pub struct Thing;\n");
    write("b.rs", "use crate::a::Thing;\npub fn f(_: Thing) {}\n");
    let (_, report) = cycles(dir.path());
    assert!(report.is_empty(), "a facade is no cycle: {report}");

    // inner now uses what b defines, through code and not a `use`.
    write(
        "a/inner.rs",
        "pub struct Thing;\npub fn g() { crate::b::f(Thing) }\n",
    );
    let (_, report) = cycles(dir.path());
    assert!(
        report.contains("a::inner -> b") && report.contains("b -> a::inner"),
        "{report}"
    );

    // A child using its parent's own item while the parent uses the child.
    write(
        "a/inner.rs",
        "pub struct Thing;\npub fn g() -> super::Own { super::Own }\n",
    );
    write(
        "a.rs",
        "mod inner;\npub use inner::Thing;\npub struct Own;\n",
    );
    let (_, report) = cycles(dir.path());
    assert!(report.contains("a::inner -> a "), "{report}");
}
