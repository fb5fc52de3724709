//! A Python pickle reader for PyTorch's `.pth` files (protocols 2 to 5): enough of the
//! pickle machine to rebuild the nested dicts, lists and tensors `torch.save` writes, with
//! every other object kept opaque (class, arguments, state), so full training checkpoints
//! (arguments namespaces, optimizer state, scalers) load too.
//!
//! Why our own: `repugnant-pickle` reads flat state dicts only (its documentation says so),
//! `serde-pickle` has no persistent ids (how `torch.save` refers to storages), and candle's
//! reader comes with the whole candle tensor library.
use std::collections::HashMap;

/// An object of the unpickled graph; children are indices into [`Pickle::objects`].
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(String, String),
    /// `callable(*args)` (REDUCE / NEWOBJ), with what SETITEMS, APPENDS and BUILD added.
    Call {
        callable: usize,
        args: usize,
        items: Vec<(usize, usize)>,
        appended: Vec<usize>,
        state: Option<usize>,
    },
    /// A persistent id (torch: a storage reference tuple).
    PersId(usize),
}

/// The objects and the root.
#[derive(Debug, Clone, Default)]
pub struct Pickle {
    pub objects: Vec<Obj>,
    pub root: usize,
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Mark,
    Ref(usize),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("truncated pickle")?;
        let s = self.b.get(self.pos..end).ok_or("truncated pickle")?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize)
    }
    fn u64(&mut self) -> Result<usize, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()) as usize)
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.b[self.pos..];
        let end = rest.iter().position(|&c| c == b'\n').ok_or("unterminated text in pickle")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|e| e.to_string())
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

/// Run the pickle machine over `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Pickle, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut p = Pickle::default();
    let mut stack: Vec<Item> = vec![];
    let mut memo: HashMap<usize, usize> = HashMap::new();
    let new = |p: &mut Pickle, o: Obj| {
        p.objects.push(o);
        p.objects.len() - 1
    };
    let pop = |stack: &mut Vec<Item>| -> Result<usize, String> {
        match stack.pop() {
            Some(Item::Ref(i)) => Ok(i),
            Some(Item::Mark) => Err("unexpected mark".into()),
            None => Err("pickle stack underflow".into()),
        }
    };
    let pop_mark = |stack: &mut Vec<Item>| -> Result<Vec<usize>, String> {
        let at = stack.iter().rposition(|i| matches!(i, Item::Mark)).ok_or("no mark on the pickle stack")?;
        let items = stack.split_off(at);
        Ok(items[1..].iter().map(|i| if let Item::Ref(x) = i { *x } else { unreachable!() }).collect())
    };
    let top = |stack: &Vec<Item>| -> Result<usize, String> {
        match stack.last() {
            Some(Item::Ref(i)) => Ok(*i),
            _ => Err("expected an object on the pickle stack".into()),
        }
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.u64()?; // FRAME
            }
            b'.' => {
                p.root = pop(&mut stack)?;
                return Ok(p);
            }
            b'(' => stack.push(Item::Mark),
            b'}' => stack.push(Item::Ref(new(&mut p, Obj::Dict(vec![])))),
            b']' => stack.push(Item::Ref(new(&mut p, Obj::List(vec![])))),
            b')' => stack.push(Item::Ref(new(&mut p, Obj::Tuple(vec![])))),
            0x8f => stack.push(Item::Ref(new(&mut p, Obj::List(vec![])))), // EMPTY_SET
            b'N' => stack.push(Item::Ref(new(&mut p, Obj::None))),
            0x88 => stack.push(Item::Ref(new(&mut p, Obj::Bool(true)))),
            0x89 => stack.push(Item::Ref(new(&mut p, Obj::Bool(false)))),
            b'J' => {
                let v = i32::from_le_bytes(r.take(4)?.try_into().unwrap()) as i64;
                stack.push(Item::Ref(new(&mut p, Obj::Int(v))))
            }
            b'K' => {
                let v = r.u8()? as i64;
                stack.push(Item::Ref(new(&mut p, Obj::Int(v))))
            }
            b'M' => {
                let v = r.u16()? as i64;
                stack.push(Item::Ref(new(&mut p, Obj::Int(v))))
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.u8()? as usize } else { r.u32()? };
                let b = r.take(n)?;
                let mut v: i64 = 0;
                for (i, byte) in b.iter().enumerate().take(8) {
                    v |= (*byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n); // two's complement of n bytes
                }
                stack.push(Item::Ref(new(&mut p, Obj::Int(v))))
            }
            b'I' | b'L' => {
                let s = r.line()?.trim_end_matches('L');
                let o = match s {
                    "01" => Obj::Bool(true),
                    "00" => Obj::Bool(false),
                    _ => Obj::Int(s.parse().map_err(|e| format!("bad INT {s}: {e}"))?),
                };
                stack.push(Item::Ref(new(&mut p, o)))
            }
            b'G' => {
                let v = f64::from_be_bytes(r.take(8)?.try_into().unwrap());
                stack.push(Item::Ref(new(&mut p, Obj::Float(v))))
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()?,
                    0x8c => r.u8()? as usize,
                    _ => r.u64()?,
                };
                let s = utf8(r.take(n)?)?;
                stack.push(Item::Ref(new(&mut p, Obj::Str(s))))
            }
            b'T' | b'U' => {
                let n = if op == b'T' { r.u32()? } else { r.u8()? as usize };
                let s = String::from_utf8_lossy(r.take(n)?).into_owned();
                stack.push(Item::Ref(new(&mut p, Obj::Str(s))))
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.u32()?,
                    b'C' => r.u8()? as usize,
                    _ => r.u64()?,
                };
                let b = r.take(n)?.to_vec();
                stack.push(Item::Ref(new(&mut p, Obj::Bytes(b))))
            }
            b'q' | b'r' => {
                let k = if op == b'q' { r.u8()? as usize } else { r.u32()? };
                memo.insert(k, top(&stack)?);
            }
            0x94 => {
                let k = memo.len();
                memo.insert(k, top(&stack)?);
            }
            b'h' | b'j' => {
                let k = if op == b'h' { r.u8()? as usize } else { r.u32()? };
                stack.push(Item::Ref(*memo.get(&k).ok_or(format!("pickle memo {k} missing"))?));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::Ref(new(&mut p, Obj::Tuple(items))))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = (0..n).map(|_| pop(&mut stack)).collect::<Result<Vec<_>, _>>()?;
                items.reverse();
                stack.push(Item::Ref(new(&mut p, Obj::Tuple(items))))
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::Ref(new(&mut p, Obj::List(items))))
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                if items.len() % 2 != 0 {
                    return Err(format!("DICT of an odd number of items at byte {}", r.pos - 1));
                }
                let pairs = items.chunks(2).map(|c| (c[0], c[1])).collect();
                stack.push(Item::Ref(new(&mut p, Obj::Dict(pairs))))
            }
            b'a' | b'e' | 0x90 => {
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack)? };
                let target = top(&stack)?;
                match &mut p.objects[target] {
                    Obj::List(v) => v.extend(items),
                    Obj::Call { appended, .. } => appended.extend(items),
                    o => return Err(format!("APPEND to {o:?}")),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err(format!("SETITEMS of an odd number of items at byte {}", r.pos - 1));
                }
                let target = top(&stack)?;
                let pairs = items.chunks(2).map(|c| (c[0], c[1]));
                match &mut p.objects[target] {
                    Obj::Dict(v) => v.extend(pairs),
                    Obj::Call { items, .. } => items.extend(pairs),
                    o => return Err(format!("SETITEM on {o:?}")),
                }
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(Item::Ref(new(&mut p, Obj::Global(module, name))))
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let s = |i: usize| {
                    if let Obj::Str(s) = &p.objects[i] {
                        Ok(s.clone())
                    } else {
                        Err("STACK_GLOBAL of a non-string")
                    }
                };
                let g = Obj::Global(s(module)?, s(name)?);
                stack.push(Item::Ref(new(&mut p, g)))
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let o = Obj::Call { callable, args, items: vec![], appended: vec![], state: None };
                stack.push(Item::Ref(new(&mut p, o)))
            }
            0x92 => {
                let _kwargs = pop(&mut stack)?;
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let o = Obj::Call { callable, args, items: vec![], appended: vec![], state: None };
                stack.push(Item::Ref(new(&mut p, o)))
            }
            b'b' => {
                let st = pop(&mut stack)?;
                let target = top(&stack)?;
                if let Obj::Call { state, .. } = &mut p.objects[target] {
                    *state = Some(st);
                }
            }
            b'Q' => {
                let id = pop(&mut stack)?;
                stack.push(Item::Ref(new(&mut p, Obj::PersId(id))))
            }
            b'P' => {
                let s = r.line()?.to_string();
                let id = new(&mut p, Obj::Str(s));
                stack.push(Item::Ref(new(&mut p, Obj::PersId(id))))
            }
            b'0' => {
                stack.pop();
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let t = *stack.last().ok_or("DUP of an empty stack")?;
                stack.push(t)
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", r.pos - 1)),
        }
    }
}

impl Pickle {
    pub fn get(&self, i: usize) -> &Obj {
        &self.objects[i]
    }

    pub fn str(&self, i: usize) -> Option<&str> {
        match &self.objects[i] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, i: usize) -> Option<i64> {
        match &self.objects[i] {
            Obj::Int(v) => Some(*v),
            Obj::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Elements of a tuple or list.
    pub fn seq(&self, i: usize) -> Option<&[usize]> {
        match &self.objects[i] {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    /// `(module, name)` of a call's callable.
    pub fn call_of(&self, i: usize) -> Option<(&str, &str)> {
        match &self.objects[i] {
            Obj::Call { callable, .. } => match &self.objects[*callable] {
                Obj::Global(m, n) => Some((m, n)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Key-value pairs of a dict, or of an `OrderedDict` (or other dict subclass) call.
    pub fn pairs(&self, i: usize) -> Option<&[(usize, usize)]> {
        match &self.objects[i] {
            Obj::Dict(v) => Some(v),
            Obj::Call { items, .. } if !items.is_empty() || self.call_of(i).is_some_and(|c| c.1.ends_with("Dict")) => {
                Some(items)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps({'a': [1, 2.5, 'x'], 'b': (True, None), 'c': -300}, protocol=2)`
    const SIMPLE: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03eX\x01\x00\x00\x00bq\x04\x88N\x86q\x05X\x01\x00\x00\x00cq\x06J\xd4\xfe\xff\xffu.";

    #[test]
    fn reads_containers_and_scalars() {
        let p = parse(SIMPLE).unwrap();
        let pairs = p.pairs(p.root).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(p.str(pairs[0].0), Some("a"));
        let list = p.seq(pairs[0].1).unwrap();
        assert_eq!((p.int(list[0]), p.get(list[1]), p.str(list[2])), (Some(1), &Obj::Float(2.5), Some("x")));
        let t = p.seq(pairs[1].1).unwrap();
        assert_eq!((p.get(t[0]), p.get(t[1])), (&Obj::Bool(true), &Obj::None));
        assert_eq!(p.int(pairs[2].1), Some(-300));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors() {
        assert!(parse(&SIMPLE[..SIMPLE.len() - 3]).is_err());
        assert!(parse(b"\x80\x02\xff").unwrap_err().contains("opcode 0xff"));
    }

    /// Cases the fuzzer's random bytes rarely reach: odd dict items, deep nesting, huge
    /// lengths, a memo without an object.
    #[test]
    fn hostile_opcodes_are_errors_not_panics() {
        for bad in [
            &b"(K\x01d."[..],                        // DICT of an odd number of items
            b"}(K\x01u.",                            // SETITEMS of an odd number
            b"X\xff\xff\xff\xff",                    // a string longer than the file
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff", // BINUNICODE8 of 2^64-1 bytes
            b"\x94.",                                // MEMOIZE of an empty stack
            b"h\x05.",                               // GET of a missing memo
            b"\x8b\xff\xff\xff\xff",                 // LONG4 longer than the file
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = [vec![b'('; 100_000], vec![b'l'; 100_000], vec![b'.']].concat();
        assert!(parse(&deep).is_ok());
    }
}
